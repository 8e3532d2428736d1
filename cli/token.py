"""`volchain token issue`: print a signed API token (send it as X-Auth-Token)."""

from __future__ import annotations

import argparse

from cli.parsing import UsageError, positive_int


def register(sub) -> None:
    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = token_sub.add_parser("issue", help="issue a token signed with this deployment's secret")
    issue.add_argument("--project", required=True)
    issue.add_argument("--user", required=True)
    issue.add_argument("--role", choices=("admin", "member", "reader"), default="member")
    issue.add_argument("--ttl", type=positive_int, help="lifetime in seconds (default VOLCHAIN_TOKEN_TTL_SECONDS)")
    issue.set_defaults(handler=issue_token)


def issue_token(args: argparse.Namespace) -> int:
    from api.deps import token_signer
    from workers.runtime import get_runtime

    rt = get_runtime()
    try:
        token = token_signer(rt).issue(args.project, args.user, args.role, args.ttl or rt.settings.token_ttl_seconds)
    except ValueError as exc:
        raise UsageError("volchain token issue", str(exc)) from None
    print(token)
    return 0
