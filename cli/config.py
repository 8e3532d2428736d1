"""What the CLI requires of the server URLs beyond their types, checked before any command runs.

The database must be PostgreSQL through psycopg 3 (`postgresql+psycopg://`: the one driver
installed; the models use PostgreSQL's own SQL); the broker must be Redis (`redis://`,
`rediss://`: the API waits on its pub/sub, `volchain status` reads its queues) or the embedded
in-process `memory://`. Anything else stops the command with one line naming the variable.
"""

from __future__ import annotations

from cli.parsing import UsageError

DATABASE_DRIVER = "postgresql+psycopg"
BROKER_SCHEMES = ("redis", "rediss", "memory")


def check_urls(settings) -> None:
    """UsageError (one line, exit 2) for a database or broker URL volchain cannot use."""
    from kombu.utils.url import maybe_sanitize_url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if settings.database_url is not None:
        try:
            url = make_url(settings.database_url)
        except ArgumentError:
            raise UsageError("volchain", "VOLCHAIN_DATABASE_URL is not a database URL; volchain needs PostgreSQL: "
                             f"{DATABASE_DRIVER}://user@host/db") from None
        if url.drivername != DATABASE_DRIVER:
            raise UsageError("volchain", f"VOLCHAIN_DATABASE_URL: unsupported database {url.drivername}:// (in "
                             f"{url.render_as_string(hide_password=True)}); volchain needs PostgreSQL through psycopg: "
                             f"{DATABASE_DRIVER}://user@host/db")
    scheme = settings.broker_url.partition("://")[0]
    if scheme not in BROKER_SCHEMES or "://" not in settings.broker_url:
        raise UsageError("volchain", f"VOLCHAIN_BROKER_URL: unsupported broker {maybe_sanitize_url(settings.broker_url)}; "
                         "volchain needs Redis: redis://host:6379/0 (or rediss://)")
