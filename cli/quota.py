"""`volchain quota show|set`: a project's limits and usage, and the default class."""

from __future__ import annotations

import argparse

from cli import render
from cli.parsing import limit_pair


def register(sub) -> None:
    quota = sub.add_parser("quota", help="quota limits and usage")
    quota_sub = quota.add_subparsers(dest="quota_command", required=True, metavar="ACTION")

    show = quota_sub.add_parser("show", help="limit, in_use and reserved per resource of a project")
    show.add_argument("--project", required=True)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=show_usage)

    set_ = quota_sub.add_parser("set", help="set limits of a project, or of a quota class")
    target = set_.add_mutually_exclusive_group(required=True)
    target.add_argument("--project")
    target.add_argument("--class", dest="class_name", metavar="CLASS", help="e.g. default (applies to every project)")
    set_.add_argument("limits", nargs="+", type=limit_pair, metavar="RESOURCE=LIMIT", help="-1 means unlimited")
    set_.set_defaults(handler=set_limits)


def report(project_id: str) -> dict[str, dict[str, int]]:
    """{resource: {limit, in_use, reserved}} as the quota engine reports it."""
    from tasks.quota_engine import usage_report
    from workers.runtime import get_runtime, quota_config

    rt = get_runtime()
    with rt.factory() as session:
        return usage_report(session, project_id, quota_config(rt.settings))


def usage_table(usage: dict[str, dict[str, int]]) -> str:
    rows = [(name, u["limit"], u["in_use"], u["reserved"]) for name, u in usage.items()]
    return render.table(("RESOURCE", "LIMIT", "IN_USE", "RESERVED"), rows)


def show_usage(args: argparse.Namespace) -> int:
    usage = report(args.project)
    print(render.to_json(usage) if args.json else usage_table(usage))
    return 0


def set_limits(args: argparse.Namespace) -> int:
    from tasks import quota_engine
    from workers.runtime import get_runtime

    limits = dict(args.limits)
    with get_runtime().factory() as session, session.begin():
        if args.project is not None:
            quota_engine.set_limits(session, args.project, limits)
        else:
            quota_engine.set_class_limits(session, limits, args.class_name)
    target = f"project {args.project}" if args.project is not None else f"class {args.class_name}"
    print(f"quota of {target}: " + ", ".join(f"{k}={v}" for k, v in limits.items()))
    return 0
