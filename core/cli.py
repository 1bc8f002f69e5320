"""The `elves` command: run the parts of the platform, and talk to a running gateway."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from elves import agent_cli, app_cli, cron_cli, key_cli, output_cli, queue_cli
from elves.client import client
from elves.config import Settings
from elves.errors import MissingSignature
from elves.table import AGENT_HEADERS, agent_row, params_of, render, when

Handler = Callable[[argparse.Namespace, Settings], int]


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _client(settings: Settings, timeout: float = 30.0) -> httpx.Client:
    return client(settings, timeout)  # signs with ELVES_KEY_FILE


def _fail(response: httpx.Response) -> int:
    try:
        error = response.json().get("error", {})
        _out(f"error [{error.get('code')}]: {error.get('message')}")
        if error.get("task_id"):
            _out(f"task id: {error['task_id']}  (look it up with: elves task {error['task_id']})")
    except ValueError:
        _out(f"error: HTTP {response.status_code}: {response.text[:200]}")
    return 1


def _result_rows(data: dict[str, Any]) -> list[list[Any]]:
    if "worker_flag" not in data:  # rejected or still waiting: the error says why
        error = data.get("error", {})
        return [
            ["task", data.get("task_id")],
            ["status", data.get("status")],
            ["error", f"[{error.get('code')}] {error.get('message')}"],
        ]
    return [
        ["task", data["task_id"]],
        ["status", data["status"]],
        ["worker_flag", data["worker_flag"]],
        ["worker_costtime", f"{data.get('worker_costtime', 0)} ms"],
        ["worker_message", data["worker_message"]],
    ]


def _exec_many(data: dict[str, Any], output: httpx.Client | None) -> int:
    """One block per agent of a selector's run; 0 only if every one succeeded."""
    for result in data["results"]:
        _out(f"agent {result['agent_id']}")
        if output is not None and result.get("status") != "waiting":
            output_cli.print_before_result(output, result["task_id"])
        _out(render(["field", "value"], _result_rows(result), max_width=200))
        _out("")
    if data.get("not_allowed"):  # matched, but the app may not run there (its rule)
        _out(f"not run (app not allowed there, 413.5): {', '.join(data['not_allowed'])}")
    return 0 if all(r.get("worker_flag") == 1 for r in data["results"]) else 2


def cmd_exec(args: argparse.Namespace, settings: Settings) -> int:
    if (args.agent is None) == (args.selector is None):
        _out("error [403.1]: give an agent or --selector, not both")
        return 1
    target = {"agent": args.agent} if args.selector is None else {"selector": args.selector}
    body = {
        **target,
        "app": args.app,
        "func": args.func,
        "params": params_of(args.param),
        "timeout": args.timeout,
    }
    with _client(settings, timeout=args.timeout + 15) as client:
        response = client.post("/api/v1/tasks/instant", json=body)
        data = response.json()
        if args.json:
            _out(json.dumps(data, indent=2))
        # What the tasks printed, before each result: read from the audit, so about a second
        # later than the result (the reason it is asked for, not the default).
        output = client if args.output else None
        if "results" in data:  # a selector: results even when some failed
            if args.json:
                return 0 if response.status_code == 200 else 1
            return _exec_many(data, output)
        if response.status_code != 200:
            return 1 if args.json else _fail(response)
        if not args.json:
            if output is not None:
                output_cli.print_before_result(output, data["task_id"])
            _out(render(["field", "value"], _result_rows(data), max_width=200))
    return 0 if data["worker_flag"] == 1 else 2


def cmd_agents(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        response = client.get("/api/v1/agents")
    if response.status_code != 200:
        return _fail(response)
    rows = [agent_row(a) for a in response.json()["agents"]]
    _out(render(AGENT_HEADERS, rows, 80))
    for a in response.json()["agents"]:
        for app, why in sorted(a.get("install_errors", {}).items()):
            _out(f"{a['agent_id']}: {app} not installed, the version before runs: {why}")
    return 0


def cmd_task(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        response = client.get(f"/api/v1/tasks/{args.task_id}")
    if response.status_code != 200:
        return _fail(response)
    data = response.json()
    state = data["state"] or {}
    _out(render(["field", "value"], sorted(state.items()), max_width=120))
    _out("")
    rows = [[e["occurred_at"], e["type"], e["topic"]] for e in data["lifecycle"]]
    _out(render(["time", "event", "topic"], rows))
    return 0


TASK_LIST_HEADERS = ["task", "app.func", "agent", "status", "attempt", "made (UTC)", "reason"]


def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    names = ("since", "app", "agent", "status", "limit")
    params = {n: str(getattr(args, n)) for n in names if getattr(args, n) is not None}
    with _client(settings) as client:
        response = client.get("/api/v1/tasks", params=params)
    if response.status_code != 200:
        return _fail(response)
    data = response.json()
    if args.json:
        _out(json.dumps(data, indent=2))
        return 0
    rows = [
        [t["task_id"], f"{t['app']}.{t['func']}", t["agent_id"], t["status"], t["attempt"],
         when(t["created_at"]), t["reason"]]
        for t in data["tasks"]
    ]  # fmt: skip
    _out(render(TASK_LIST_HEADERS, rows, 60))
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        response = client.post("/api/v1/audit", json={"sql": args.sql})
    if response.status_code != 200:
        return _fail(response)
    data = response.json()
    _out(render(data["columns"], data["rows"]))
    return 0


def cmd_streams(args: argparse.Namespace, settings: Settings) -> int:
    from elves.streams.app import run

    sys.argv = [sys.argv[0], "worker"]  # Faust's worker reads its own command line
    run(settings, loglevel=args.loglevel)
    return 0


def _log_to_stderr() -> None:
    """Long-running parts log to stderr (a file, under `elves up` and the tests)."""
    logging.basicConfig(
        level=os.environ.get("ELVES_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from elves.api.dashboard import run

    _log_to_stderr()
    if args.port is not None:
        settings = dataclasses.replace(settings, dashboard_port=args.port)
    _out(f"dashboard on http://{settings.dashboard_host}:{settings.dashboard_port}/")
    run(settings)
    return 0


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from elves.api.app import run

    _log_to_stderr()
    run(settings)
    return 0


def cmd_agent(args: argparse.Namespace, settings: Settings) -> int:
    from elves.agent.daemon import main

    _log_to_stderr()
    return main(settings)


def cmd_processor_run(args: argparse.Namespace, settings: Settings) -> int:
    from elves.apps.sdk.processor import run

    _log_to_stderr()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        run(settings, args.app, stop)
    except FileNotFoundError as exc:
        _out(f"error: {exc}")
        return 1
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from elves.up import up

    return up(settings, agents=args.agents)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="elves", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start Kafka, streams, gateway+watcher and a local agent")
    up.add_argument("--agents", type=int, default=1, help="how many local agents")
    up.set_defaults(handler=cmd_up)

    streams = sub.add_parser("streams", help="run the Faust streams worker")
    streams.add_argument("--loglevel", default="info", choices=["debug", "info", "warn", "error"])
    streams.set_defaults(handler=cmd_streams)
    dashboard = sub.add_parser(
        "dashboard", help="a read-only web view of the fleet, through the gateway with your key"
    )
    dashboard.add_argument("--port", type=int, default=None, help="default ELVES_DASHBOARD_PORT")
    dashboard.set_defaults(handler=cmd_dashboard)
    sub.add_parser("gateway", help="run the REST gateway and the watcher").set_defaults(
        handler=cmd_gateway
    )
    agent_cli.register(sub, run=cmd_agent, listing=cmd_agents)

    queue_cli.register(sub)
    output_cli.register(sub)
    cron_cli.register(sub)
    app_cli.register(sub)
    key_cli.register(sub)
    processor = sub.add_parser("processor", help="app processors (the server side of mode P)")
    processor_sub = processor.add_subparsers(dest="processor_command", required=True)
    processor_run = processor_sub.add_parser(
        "run", help="run an app's processor until SIGINT or SIGTERM"
    )
    processor_run.add_argument("app")
    processor_run.set_defaults(handler=cmd_processor_run)

    ex = sub.add_parser("exec", help="run an instant task and print its result")
    # `elves exec AGENT APP FUNC`, or `elves exec --selector role=web APP FUNC`
    ex.add_argument("agent", nargs="?", help="omit it with --selector")
    ex.add_argument("--selector", help="every live agent with these tags, e.g. role=web,dc=bj")
    ex.add_argument("app")
    ex.add_argument("func")
    ex.add_argument("-p", "--param", action="append", default=[], help="key=value (repeat)")
    ex.add_argument("-t", "--timeout", type=int, default=90)
    shown = ex.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print the raw JSON reply")
    shown.add_argument(
        "-o",
        "--output",
        action="store_true",
        help="print what the task printed (stdout, stderr) before its result",
    )
    ex.set_defaults(handler=cmd_exec)

    sub.add_parser("agents", help="list agents").set_defaults(handler=cmd_agents)
    listing = sub.add_parser("tasks", help="the tasks made lately, newest first, with status")
    listing.add_argument("--since", default=None, help="Unix ms or ISO time (default: a day ago)")
    listing.add_argument("--app", default=None)
    listing.add_argument("--agent", default=None)
    listing.add_argument("--status", default=None, help="succeeded, failed, timed_out, ...")
    listing.add_argument("--limit", type=int, default=None, help="at most 500 (default 50)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_tasks)
    task = sub.add_parser("task", help="show a task and its lifecycle")
    task.add_argument("task_id")
    task.set_defaults(handler=cmd_task)
    audit = sub.add_parser("audit", help="run read-only SQL over the audit events table")
    audit.add_argument("sql")
    audit.set_defaults(handler=cmd_audit)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings.from_env(dict(os.environ))
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except httpx.ConnectError:
        _out(f"error [503.1]: no gateway at {settings.base_url} (is `elves up` running?)")
        return 1
    except MissingSignature as exc:  # no key file to sign with
        _out(f"error [{exc.code}]: {exc.message}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
