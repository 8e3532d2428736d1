"""`volchain quota show|set|check`: a project's limits and usage, the default class, and drift.

`quota check` exits 0 when usage matches the rows (or, with --sync, once every drift it found is
repaired) and 1 when drift is left; errors exit 2 (cli/main.py).
"""

from __future__ import annotations

import argparse

from cli import render
from cli.parsing import limit_pair


def register(sub) -> None:
    quota = sub.add_parser("quota", help="quota limits and usage")
    quota_sub = quota.add_subparsers(dest="quota_command", required=True, metavar="ACTION")

    show = quota_sub.add_parser("show", help="limit, in_use and reserved per resource of a project")
    show.add_argument("--project", required=True, help="the project to show")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(handler=show_usage)

    set_ = quota_sub.add_parser("set", help="set limits of a project, or of a quota class")
    target = set_.add_mutually_exclusive_group(required=True)
    target.add_argument("--project", help="set the limits of this project")
    target.add_argument("--class", dest="class_name", metavar="CLASS", help="e.g. default (applies to every project)")
    set_.add_argument("limits", nargs="+", type=limit_pair, metavar="RESOURCE=LIMIT", help="-1 means unlimited")
    set_.add_argument("--json", action="store_true", help="print what was set as a JSON object")
    set_.set_defaults(handler=set_limits)

    check = quota_sub.add_parser("check", help="compare usage with the volume and snapshot rows; --sync repairs it")
    check.add_argument("--project", help="only this project (default: every project)")
    check.add_argument("--sync", action="store_true", help="repair the drift found, recording each repair")
    check.add_argument("--json", action="store_true", help="print JSON instead of tables")
    check.set_defaults(handler=check_usage)


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
    if args.json:
        print(render.to_json({"project": args.project, "class": args.class_name, "limits": limits}))
    else:
        print(f"quota of {target}: " + ", ".join(f"{k}={v}" for k, v in limits.items()))
    return 0


def drift_table(drifts) -> str:
    rows = [(d.project_id, d.resource, d.in_use, d.reserved, d.expected_in_use, d.expected_reserved) for d in drifts]
    return render.table(("PROJECT", "RESOURCE", "IN_USE", "RESERVED", "EXPECTED_IN_USE", "EXPECTED_RESERVED"), rows)


def repair_table(repairs) -> str:
    rows = [(r.project_id, r.resource, r.field, r.old, r.new) for r in repairs]
    return render.table(("PROJECT", "RESOURCE", "FIELD", "OLD", "NEW"), rows)


def check_usage(args: argparse.Namespace) -> int:
    """Print the drift (and, with --sync, what was repaired); 1 while drift is left."""
    from models.quota_repair import RepairSource
    from tasks.reconcile import check, consistent_session
    from workers.runtime import get_runtime, quota_config

    rt = get_runtime()
    repairs = []
    if args.sync:
        from workers.reconciler import reconcile_once

        repairs = reconcile_once(RepairSource.MANUAL, args.project, wait=True)
    with consistent_session(rt.factory) as session:
        drifts = check(session, quota_config(rt.settings), args.project)
    if args.json:
        print(render.to_json({"drift": [d.to_dict() for d in drifts], "repaired": [r.to_dict() for r in repairs]}))
    else:
        if repairs:
            print("repaired:\n" + repair_table(repairs))
        if drifts:
            print(("still drifting:\n" if args.sync else "") + drift_table(drifts))
        if not repairs and not drifts:
            print("no drift")
    return 1 if drifts else 0
