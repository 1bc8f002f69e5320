"""`elves queue ...`: queues from the command line, through the gateway."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import Counter
from typing import Any, get_args

from elves.client import client
from elves.config import Settings
from elves.errors import NotFound
from elves.streams.queues.rerun import ONLY
from elves.streams.queues.state import QUEUE_FINAL, TaskStatus
from elves.table import (
    QUEUE_TASK_HEADERS,
    call,
    limits_said,
    out,
    params_of,
    queue_task_row,
    render,
    say_error,
    when,
)

# `--wait`'s exit codes, beside 0 (the queue succeeded) and 1 (a call failed).
ENDED_UNSUCCESSFUL = 2  # the queue ended failed or stopped, as `elves exec` for a task
STILL_RUNNING = 3  # --wait-timeout ran out first
WAIT_FIRST_S = 0.2  # the first pause between two looks, growing to WAIT_MOST_S
WAIT_MOST_S = 2.0
# A queue just made may not be in the audit yet (the watcher writes in batches): "not found"
# means "not yet" this long (or the wait's timeout, if shorter), then it is the answer.
AUDIT_LAG_S = 10.0


def _task_body(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    target = {"agent": args.agent} if args.selector is None else {"selector": args.selector}
    body: dict[str, Any] = {
        **target,
        "func": args.func,
        "params": params,
        "timeout": args.timeout,
        "mode": args.mode,
        "depends_on": args.depends_on,
        "run_if": args.run_if,
        "max_attempts": args.attempts,
        "backoff_s": args.backoff,
    }
    if args.task_id:
        body["task_id"] = args.task_id
    return body


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    body = {"app": args.app, "name": args.name, **_limits(args)}
    data = call(settings, "POST", "/api/v1/queues", json=body)
    if data is None:
        return 1
    out(data["queue_id"])
    return 0


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    path = f"/api/v1/queues/{args.queue_id}/tasks"
    data = call(settings, "POST", path, json=_task_body(args, params_of(args.param)))
    if data is None:
        return 1
    out(data["task_id"])
    for task in data.get("tasks", []):  # a selector: one task per agent
        out(f"  {task['task_id']}")
    return 0


def cmd_add_many(args: argparse.Namespace, settings: Settings) -> int:
    """Tasks from a JSON file (a list of tasks as the REST API takes them, or {"tasks": [...]})."""
    try:
        with open(args.file) if args.file != "-" else contextlib.nullcontext(sys.stdin) as f:
            loaded = json.load(f)
    except (OSError, ValueError) as exc:
        out(f"error: cannot read tasks from {args.file}: {exc}")
        return 1
    tasks = loaded.get("tasks") if isinstance(loaded, dict) else loaded
    path = f"/api/v1/queues/{args.queue_id}/tasks/batch"
    data = call(settings, "POST", path, json={"tasks": tasks})
    if data is None:
        return 1
    for task in data["tasks"]:
        error = task.get("error")
        why = f"  [{error['code']}] {error['message']}" if error else ""
        out(f"{task['task_id']}  {task['status']}{why}")
    out(f"{data['added']} added, {data['rejected']} rejected")
    return 1 if data["rejected"] else 0


def cmd_quick(args: argparse.Namespace, settings: Settings) -> int:
    body = {
        "app": args.app,
        **_limits(args),
        **_task_body(args, params_of(args.param)),
    }
    data = call(settings, "POST", "/api/v1/queues/quick", json=body)
    if data is None:
        return 1
    out(f"queue {data['queue_id']}  task {data['task_id']}")
    return wait(settings, data["queue_id"], args.wait_timeout) if args.wait else 0


def cmd_commit(args: argparse.Namespace, settings: Settings) -> int:
    if not call(settings, "POST", f"/api/v1/queues/{args.queue_id}/commit"):
        return 1
    return wait(settings, args.queue_id, args.wait_timeout) if args.wait else 0


def cmd_rerun(args: argparse.Namespace, settings: Settings) -> int:
    body = {"only": args.only, "name": args.name}
    data = call(settings, "POST", f"/api/v1/queues/{args.queue_id}/rerun", json=body)
    if data is None:
        return 1
    out(data["queue_id"])  # alone on its line, as `create` prints it: for scripts
    for task in data["tasks"]:
        error = task.get("error")
        if error:
            out(f"{task['rerun_of']} refused: [{error['code']}] {error['message']}")
    if not data["committed"]:
        out(f"queue {data['queue_id']} is open, not committed: commit or stop it")
        return 1
    return wait(settings, data["queue_id"], args.wait_timeout) if args.wait else 0


def cmd_wait(args: argparse.Namespace, settings: Settings) -> int:
    return wait(settings, args.queue_id, args.timeout)


def wait(settings: Settings, queue_id: str, timeout_s: float | None) -> int:
    """Follow a queue until it ends: a line each time its tasks' statuses change, then its
    tasks as `show` prints them. 0 when it succeeded, ENDED_UNSUCCESSFUL when it failed or was
    stopped, STILL_RUNNING when `timeout_s` (None: no limit) ran out first, 1 when the gateway
    refused. It asks the gateway again and again, more slowly as time goes (at most every
    WAIT_MOST_S): a queue's state is a fold of the audit, which any gateway can make."""
    started = time.monotonic()
    pause, said = WAIT_FIRST_S, ""
    lag_s = AUDIT_LAG_S if timeout_s is None else min(AUDIT_LAG_S, timeout_s)
    with client(settings, timeout=60) as signing:
        while True:
            response = signing.get(f"/api/v1/queues/{queue_id}")
            data: dict[str, Any] = response.json()
            waited = time.monotonic() - started
            if response.status_code == NotFound.status and waited < lag_s:
                data = {"status": "not in the audit yet", "tasks": []}
            elif response.status_code >= 400:
                return say_error(data)
            line = progress(data)
            if line != said:
                out(f"{waited:6.1f} s  {line}")
                said = line
            if data["status"] in QUEUE_FINAL:
                _print_queue(data)
                return 0 if data["status"] == "succeeded" else ENDED_UNSUCCESSFUL
            if timeout_s is not None and waited >= timeout_s:
                out(f"queue {queue_id} is still {data['status']} after {timeout_s:g} s")
                return STILL_RUNNING
            left = None if timeout_s is None else timeout_s - waited
            time.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 1.5, WAIT_MOST_S)


def progress(queue: dict[str, Any]) -> str:
    """A queue's status and how many of its tasks are in each status, in lifecycle order:
    "running: 5 pending, 2 running, 3 succeeded"."""
    counts = Counter(t["status"] for t in queue["tasks"])
    shown = [f"{counts[s]} {s}" for s in get_args(TaskStatus) if counts[s]]
    return f"{queue['status']}: {', '.join(shown)}" if shown else str(queue["status"])


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    return 0 if call(settings, "POST", f"/api/v1/queues/{args.queue_id}/stop") else 1


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    params = {"as_of": args.as_of} if args.as_of else {}
    data = call(settings, "GET", f"/api/v1/queues/{args.queue_id}", params=params)
    if data is None:
        return 1
    if args.json:
        out(json.dumps(data, indent=2))
        return 0
    _print_queue(data, f" as of {args.as_of}" if args.as_of else "")
    return 0


def _print_queue(data: dict[str, Any], note: str = "") -> None:
    out(f"queue {data['queue_id']} ({data['app']}): {data['status']}{limits_said(data)}{note}")
    out(render(QUEUE_TASK_HEADERS, [queue_task_row(t) for t in data["tasks"]]))


LIST_HEADERS = ["queue", "app", "name", "status", "tasks", "created (UTC)", "finished (UTC)"]


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    names = ("since", "app", "status", "limit")
    params = {n: str(getattr(args, n)) for n in names if getattr(args, n) is not None}
    data = call(settings, "GET", "/api/v1/queues", params=params)
    if data is None:
        return 1
    if args.json:
        out(json.dumps(data, indent=2))
        return 0
    rows = [
        [q["queue_id"], q["app"], q["name"], q["status"], q["tasks"], when(q["created_at"]),
         when(q["finished_at"])]
        for q in data["queues"]
    ]  # fmt: skip
    out(render(LIST_HEADERS, rows))
    return 0


def _task_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("agent", nargs="?", help="omit it with --selector")
    p.add_argument("func")
    p.add_argument("--selector", help="one task per live agent with these tags, e.g. role=web")
    p.add_argument("-p", "--param", action="append", default=[], help="key=value (repeat)")
    p.add_argument("-t", "--timeout", type=int, default=90)
    p.add_argument("--task-id", default=None, help="default: a new id")
    p.add_argument("--mode", default="NP", choices=["NP", "P"])
    p.add_argument("--depends-on", action="append", default=[], metavar="TASK_ID")
    p.add_argument("--run-if", default="all_succeeded", choices=["all_succeeded", "all_done"])
    p.add_argument("--attempts", type=int, default=1, help="max attempts (retries + 1)")
    p.add_argument("--backoff", type=int, default=0, help="seconds before the first retry")


def _limit_options(p: argparse.ArgumentParser, default: tuple[int, int] | None = (0, 0)) -> None:
    p.add_argument(
        "--max-parallel",
        type=parallel_limit,
        default=default,
        metavar="N|P%",
        help="at most N of the queue's tasks at once (or P%% of them, at least 1), in the order "
        "added (a rolling run: quick with --selector); 0, the default: no limit",
    )
    p.add_argument(
        "--max-failures",
        type=failure_limit,
        default=default,
        metavar="N|P%",
        help="once N tasks failed or timed out (or more than P%% of the queue's tasks), cancel "
        "the rest (kill what runs) and end the queue failed; 0, the default: never",
    )


def _count_or_percent(text: str, most_percent: int) -> tuple[int, int]:
    """ "N" a count, "P%" a percent of the queue's tasks: (count, percent)."""
    number, percent = (text[:-1], True) if text.endswith("%") else (text, False)
    if not number.isdigit() or (percent and not 0 < int(number) <= most_percent):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a whole number of tasks (3) or a percent from 1 to {most_percent} (10%)"
        )
    return (0, int(number)) if percent else (int(number), 0)


def parallel_limit(text: str) -> tuple[int, int]:
    """`--max-parallel`: (count, percent)."""
    return _count_or_percent(text, 100)


def failure_limit(text: str) -> tuple[int, int]:
    """`--max-failures`: (count, percent); 100% could never stop a queue."""
    return _count_or_percent(text, 99)


def _limits(args: argparse.Namespace) -> dict[str, int]:
    """The limits the options give; one left out (None) is not in the body. Each option sets
    its count and its percent together: `--max-parallel 5` also takes away a percent."""
    limits = {}
    if args.max_parallel is not None:
        limits["max_parallel"], limits["max_parallel_percent"] = args.max_parallel
    if args.max_failures is not None:
        limits["max_failures"], limits["max_failure_percent"] = args.max_failures
    return limits


def cmd_limits(args: argparse.Namespace, settings: Settings) -> int:
    body = _limits(args)
    if not body:
        out("error: give --max-parallel, --max-failures or both (0: no limit)")
        return 2
    data = call(settings, "POST", f"/api/v1/queues/{args.queue_id}/limits", json=body)
    if data is None:
        return 1
    said = limits_said({**data, "tasks": []})
    out(f"queue {args.queue_id}: {said[2:] if said else 'no limits'}")
    return 0


def _wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        action="store_true",
        help="then follow the queue until it ends; exit 0 if it succeeded, 2 if it failed or "
        "was stopped, 3 if --wait-timeout ran out",
    )
    p.add_argument(
        "--wait-timeout", type=float, default=None, metavar="S", help="default: no limit"
    )


def register(sub: Any) -> None:
    """Add `elves queue ...` to the CLI's subcommands."""
    queue = sub.add_parser("queue", help="queues of tasks with dependencies")
    qsub = queue.add_subparsers(dest="queue_command", required=True)
    create = qsub.add_parser("create", help="create a queue for an app; prints its id")
    create.add_argument("app")
    create.add_argument("--name", default="")
    _limit_options(create)
    create.set_defaults(handler=cmd_create)
    add = qsub.add_parser("add", help="add a task to an open queue; prints its id")
    add.add_argument("queue_id")
    _task_options(add)
    add.set_defaults(handler=cmd_add)
    many = qsub.add_parser(
        "add-many", help="add tasks from a JSON file, in order; prints each one's outcome"
    )
    many.add_argument("queue_id")
    many.add_argument("file", help='a JSON list of tasks, or {"tasks": [...]}; - for stdin')
    many.set_defaults(handler=cmd_add_many)
    quick = qsub.add_parser("quick", help="create, add one task and commit")
    quick.add_argument("app")
    _task_options(quick)
    _limit_options(quick)
    _wait_options(quick)
    quick.set_defaults(handler=cmd_quick)
    commit = qsub.add_parser("commit", help="commit a queue: its roots start")
    commit.add_argument("queue_id")
    _wait_options(commit)
    commit.set_defaults(handler=cmd_commit)
    stop = qsub.add_parser(
        "stop", help="stop a queue: pending tasks cancelled, running ones killed"
    )
    stop.add_argument("queue_id")
    stop.set_defaults(handler=cmd_stop)
    limits = qsub.add_parser(
        "limits",
        help="change the limits of a queue that has not ended (those given; 0: no limit)",
    )
    limits.add_argument("queue_id")
    _limit_options(limits, default=None)
    limits.set_defaults(handler=cmd_limits)
    rerun = qsub.add_parser(
        "rerun", help="run an ended queue again as a new queue; prints the new queue's id"
    )
    rerun.add_argument("queue_id")
    rerun.add_argument(
        "--only",
        default="all",
        choices=ONLY,
        help="unsuccessful: only the tasks that did not succeed (failed, timed out, skipped, "
        "cancelled); a dependency on a task that succeeded counts as met",
    )
    rerun.add_argument("--name", default="", help='default: "rerun of <name or id>"')
    _wait_options(rerun)
    rerun.set_defaults(handler=cmd_rerun)
    waiting = qsub.add_parser(
        "wait",
        help="follow a queue until it ends; exit 0 if it succeeded, 2 if it failed or was "
        "stopped, 3 if --timeout ran out",
    )
    waiting.add_argument("queue_id")
    waiting.add_argument("--timeout", type=float, default=None, help="seconds; default: no limit")
    waiting.set_defaults(handler=cmd_wait)
    listing = qsub.add_parser("list", help="the queues created lately, newest first")
    listing.add_argument("--since", default=None, help="Unix ms or ISO time (default: a day ago)")
    listing.add_argument("--app", default=None)
    listing.add_argument("--status", default=None, help="open, committed, running, succeeded, ...")
    listing.add_argument("--limit", type=int, default=None, help="at most 500 (default 50)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    show = qsub.add_parser("show", help="a queue and its tasks")
    show.add_argument("queue_id")
    show.add_argument("--as-of", default=None, help="Unix ms or ISO time: the state then")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)
