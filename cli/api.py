"""`volchain api`: serve the Cinder-compatible REST API with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

from cli.parsing import UsageError, port_number, positive_int


def register(sub) -> None:
    p = sub.add_parser("api", help="serve the Cinder-compatible REST API (v3)",
                       description="Serves /v3/{project_id}/volumes and friends. Auth: VOLCHAIN_AUTH_STRATEGY "
                       "(token, the default, or noauth).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8776, help="port to listen on (default 8776)")
    p.add_argument("--workers", type=positive_int, default=1, help="API processes")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                   help="level of the API's and uvicorn's logs (default warning)")
    p.add_argument("--no-access-log", action="store_true", help="do not log one line per request (volchain.access)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from workers.embedded import is_embedded
    from workers.settings import get_settings

    settings = get_settings()
    if settings.auth_strategy not in ("token", "noauth"):
        raise UsageError("volchain api", f"VOLCHAIN_AUTH_STRATEGY must be token or noauth, not {settings.auth_strategy!r}")
    if is_embedded(settings):
        raise UsageError("volchain api", "the API needs a shared broker: set VOLCHAIN_BROKER_URL "
                         "(e.g. redis://127.0.0.1:6379/0) and run `volchain worker`")
    # volchain's own loggers at --log-level too (warning by default: the noauth warning, every 5xx),
    # uvicorn's through the same handler (log_config=None), and the access log unless asked not to.
    root = logging.getLogger()
    root.setLevel(min(root.level, getattr(logging, args.log_level.upper())))
    if not args.no_access_log:
        logging.getLogger("volchain.access").setLevel(logging.INFO)
    print(startup_line(settings, args), file=sys.stderr, flush=True)
    if settings.prometheus_multiproc_dir is not None:  # this run's workers write there afresh (tasks/metrics.py)
        from tasks.metrics import clear_multiprocess_dir

        clear_multiprocess_dir(settings.prometheus_multiproc_dir)
    elif args.workers > 1:
        print("volchain api: warning: --workers above 1 without PROMETHEUS_MULTIPROC_DIR: each /metrics scrape "
              "shows one worker's counts", file=sys.stderr, flush=True)
    uvicorn.run("api.main:app", host=args.host, port=args.port, workers=args.workers, log_level=args.log_level,
                log_config=None, access_log=False, proxy_headers=False, server_header=False)
    return 0


def startup_line(settings, args: argparse.Namespace) -> str:
    """Where the API listens and what it talks to, credentials hidden."""
    from kombu.utils.url import maybe_sanitize_url
    from sqlalchemy.engine import make_url

    database = make_url(settings.database_url).render_as_string(hide_password=True) if settings.database_url \
        else "unset"
    return (f"volchain api: listening on http://{args.host}:{args.port} ({args.workers} process"
            f"{'es' if args.workers > 1 else ''}), auth {settings.auth_strategy}, database {database}, "
            f"broker {maybe_sanitize_url(settings.broker_url)}")
