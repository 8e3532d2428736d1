"""`volchain api`: serve the Cinder-compatible REST API with uvicorn."""

from __future__ import annotations

import argparse

from cli.parsing import UsageError, positive_int


def register(sub) -> None:
    p = sub.add_parser("api", help="serve the Cinder-compatible REST API (v3)",
                       description="Serves /v3/{project_id}/volumes and friends. Auth: VOLCHAIN_AUTH_STRATEGY "
                       "(token, the default, or noauth).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=positive_int, default=8776)
    p.add_argument("--workers", type=positive_int, default=1, help="API processes")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
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
    uvicorn.run("api.main:app", host=args.host, port=args.port, workers=args.workers, log_level=args.log_level,
                proxy_headers=False, server_header=False)
    return 0
