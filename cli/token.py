"""`volchain token issue`: print a signed API token (send it as X-Auth-Token)."""

from __future__ import annotations

import argparse
import time

from cli import render
from cli.parsing import UsageError, positive_int

ROLES = ("admin", "member", "reader")


def register(sub) -> None:
    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = token_sub.add_parser("issue", help="issue a token signed with this deployment's secret")
    issue.add_argument("--project", required=True, help="the project the token acts in")
    issue.add_argument("--user", required=True, help="the user id the token names")
    issue.add_argument("--role", choices=ROLES, default="member", help="the caller's role (default member)")
    issue.add_argument("--ttl", type=positive_int, help="lifetime in seconds (default VOLCHAIN_TOKEN_TTL_SECONDS)")
    issue.add_argument("--json", action="store_true",
                       help="print the token with its project, user, role and expiry as a JSON object")
    issue.set_defaults(handler=issue_token)


def issue_token(args: argparse.Namespace) -> int:
    from api.deps import token_signer
    from workers.runtime import get_runtime

    rt = get_runtime()
    ttl = args.ttl or rt.settings.token_ttl_seconds
    now = int(time.time())
    try:
        token = token_signer(rt).issue(args.project, args.user, args.role, ttl, now=now)
    except ValueError as exc:
        raise UsageError("volchain token issue", str(exc)) from None
    if args.json:
        print(render.to_json({"token": token, "project_id": args.project, "user_id": args.user, "role": args.role,
                              "expires_at": now + ttl}))
    else:
        print(token)
    return 0
