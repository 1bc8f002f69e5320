"""`elves cron ...`: center and agent crons from the command line, through the gateway."""

from __future__ import annotations

import argparse
import json
from typing import Any

from elves.config import Settings
from elves.table import call, out, params_of, render, when


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    if (args.agent is None) == (args.selector is None):
        out("error [403.1]: give an agent or --selector, not both")
        return 1
    target = {"agent": args.agent} if args.selector is None else {"selector": args.selector}
    body: dict[str, Any] = {
        **target,
        "app": args.app,
        "func": args.func,
        "rule": args.rule,
        "params": params_of(args.param),
        "timeout": args.timeout,
        "timezone": args.timezone,
        "mode": args.mode,
        "misfire": args.misfire,
        "overlap": args.overlap,
        "name": args.name,
    }
    data = call(settings, "POST", "/api/v1/crons", json=body)
    if data is None:
        return 1
    out(data["cron_id"])
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    data = call(settings, "GET", "/api/v1/crons", params={"deleted": int(args.deleted)})
    if data is None:
        return 1
    rows = [
        [
            c["cron_id"],
            c["name"],
            c["agent_id"] or c.get("selector") or "",
            f"{c['app']}.{c['func']}",
            c["rule"],
            c["mode"],
            c["status"],
            when(c["next_at"]),
            c["last_status"],
        ]
        for c in data["crons"]
    ]
    headers = [
        "cron",
        "name",
        "agent/selector",
        "app.func",
        "rule",
        "mode",
        "status",
        "next (UTC)",
        "last",
    ]
    out(render(headers, rows))
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    data = call(settings, "GET", f"/api/v1/crons/{args.cron_id}")
    if data is None:
        return 1
    if args.json:
        out(json.dumps(data, indent=2))
        return 0
    keys = (
        "cron_id",
        "name",
        "status",
        "agent_id",
        "selector",
        "app",
        "func",
        "params",
        "rule",
        "timezone",
        "mode",
        "misfire",
        "overlap",
        "timeout_s",
    )
    rows: list[list[Any]] = [[k, data[k]] for k in keys]
    rows.append(["next fires (UTC)", ", ".join(when(t) for t in data["next_fires"])])
    fire, result = data["last_fire"], data["last_result"]
    if fire:
        fired_at = when(fire["scheduled_at"])
        tasks = ", ".join(fire.get("task_ids") or [fire["task_id"]])
        rows.append(["last fire", f"{fired_at} task {tasks} ({fire['status']})"])
    if result:
        rows.append(["last result", f"{result['status']}: {result['message']}"])
    rows.append(["counts", " ".join(f"{k}={v}" for k, v in data["counts"].items())])
    out(render(["field", "value"], rows, max_width=120))
    return 0


def cmd_update(args: argparse.Namespace, settings: Settings) -> int:
    """Change a cron in place: the options given; `-p` gives its params whole."""
    body: dict[str, Any] = {
        name: value
        for name, value in (
            ("rule", args.rule),
            ("timezone", args.timezone),
            ("timeout", args.timeout),
            ("misfire", args.misfire),
            ("overlap", args.overlap),
            ("name", args.name),
        )
        if value is not None
    }
    if args.param:
        body["params"] = params_of(args.param)
    if not body:
        out("error: give what to change (--rule, -p, -t, --timezone, --misfire, --overlap, --name)")
        return 2
    data = call(settings, "PATCH", f"/api/v1/crons/{args.cron_id}", json=body)
    if data is None:
        return 1
    nxt = ", ".join(when(t) for t in data["next_fires"][:3]) or "none"
    out(f"{data['cron_id']}: {data['status']}, {data['rule']} ({data['timezone']}); next {nxt}")
    return 0


def _order(method: str, suffix: str) -> Any:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        data = call(settings, method, f"/api/v1/crons/{args.cron_id}{suffix}")
        if data is None:
            return 1
        out(f"{data['cron_id']}: {data['status']}")
        return 0

    return handler


def register(sub: Any) -> None:
    """Add `elves cron ...` to the CLI's subcommands."""
    cron = sub.add_parser("cron", help="scheduled tasks")
    csub = cron.add_subparsers(dest="cron_command", required=True)
    add = csub.add_parser("add", help="schedule a task by a cron rule; prints the cron id")
    add.add_argument("agent", nargs="?", help="omit it with --selector")
    add.add_argument("--selector", help="fire on every live agent with these tags (role=web)")
    add.add_argument("app")
    add.add_argument("func")
    add.add_argument("rule", help="5 fields, 6 with seconds first, or Quartz ('0/5 * * * * ?')")
    add.add_argument("-p", "--param", action="append", default=[], help="key=value (repeat)")
    add.add_argument("-t", "--timeout", type=int, default=90)
    add.add_argument("--timezone", default="UTC", help="IANA name, e.g. Asia/Shanghai")
    add.add_argument("--mode", default="CANP", choices=["CANP", "CAP", "AANP", "AAP"])
    add.add_argument("--misfire", default="run_once", choices=["run_once", "run_all", "skip"])
    add.add_argument("--overlap", default="skip", choices=["skip", "queue", "parallel"])
    add.add_argument("--name", default="")
    add.set_defaults(handler=cmd_add)
    listing = csub.add_parser("list", help="every cron")
    listing.add_argument("--deleted", action="store_true", help="deleted ones too")
    listing.set_defaults(handler=cmd_list)
    show = csub.add_parser("show", help="a cron: rule, next fires, last fire, counts")
    show.add_argument("cron_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)
    update = csub.add_parser(
        "update", help="change a cron in place: its rule, params, timeout, policies or name"
    )
    update.add_argument("cron_id")
    update.add_argument("--rule", help="the new rule; from now on (no misfires of it)")
    update.add_argument(
        "-p", "--param", action="append", default=[], help="key=value (repeat): the params, whole"
    )
    update.add_argument("-t", "--timeout", type=int)
    update.add_argument("--timezone", help="IANA name, e.g. Asia/Shanghai")
    update.add_argument("--misfire", choices=["run_once", "run_all", "skip"])
    update.add_argument("--overlap", choices=["skip", "queue", "parallel"])
    update.add_argument("--name")
    update.set_defaults(handler=cmd_update)
    for name, method, suffix in (
        ("pause", "POST", "/pause"),
        ("resume", "POST", "/resume"),
        ("delete", "DELETE", ""),
    ):
        p = csub.add_parser(name, help=f"{name} a cron")
        p.add_argument("cron_id")
        p.set_defaults(handler=_order(method, suffix))
