"""`elves output TASK [--follow]`: what a task printed, stdout to stdout and stderr to stderr.

Without `--follow` it prints what the audit has now. With it, it prints each part as it comes
until the task ends, then exits as `elves exec` does: 0 succeeded, 2 failed, timed out or
rejected, 1 refused. A task just submitted may not be in the audit yet: "not found" means "not
yet" for `AUDIT_LAG_S`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

import httpx

from elves.client import client
from elves.config import Settings
from elves.errors import NotFound
from elves.queue_cli import AUDIT_LAG_S
from elves.table import say_error

# Between asks for a task not in the audit yet: often at first, since `elves exec --output`
# asks the moment its task ended, and the watcher's next insert (0.5 s apart at most) brings it;
# seldom after that, for a task id that may be wrong.
RETRY_SOON_S = 0.1
RETRY_LATER_S = 0.5
SOON_S = 2.0


class Printer:
    """Writes parts to the terminal: each stream to its own, a line when another attempt
    starts, and a note when the agent's cap left output out."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        # The streams of the moment it is made, not of the import: a redirect is followed.
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.attempt: int | None = None
        self.mid_line = False  # stdout's last part did not end its line

    def part(self, part: dict[str, Any]) -> None:
        if part["attempt"] != self.attempt:
            if self.attempt is not None or part["attempt"] > 1:
                self._note(f"--- attempt {part['attempt']} on {part['agent_id']}")
            self.attempt = part["attempt"]
        target = self.err if part["stream"] == "stderr" else self.out
        target.write(part["data"])
        target.flush()
        if target is self.out and part["data"]:
            self.mid_line = not part["data"].endswith("\n")
        if part.get("dropped_bytes"):
            self._note(f"[{part['dropped_bytes']} bytes past the agent's output cap not sent]")

    def _note(self, text: str) -> None:
        self.out.flush()
        self.err.write(text + "\n")
        self.err.flush()


def exit_code(end: dict[str, Any]) -> int:
    return 0 if end.get("status") == "succeeded" else 2


def print_before_result(signing: httpx.Client, task_id: str) -> None:
    """What an ended task printed, as `elves exec --output` shows it above the result: ends
    with a line break, so the result starts on a line of its own."""
    printer = Printer()
    print_output(signing, task_id, follow=True, printer=printer)
    if printer.mid_line:
        printer.out.write("\n")


def cmd_output(args: argparse.Namespace, settings: Settings) -> int:
    with client(settings, timeout=60) as signing:
        return print_output(signing, args.task_id, follow=args.follow)


def print_output(
    signing: httpx.Client, task_id: str, *, follow: bool, printer: Printer | None = None
) -> int:
    """Print a task's output (to its end, with `follow`); the exit code `elves output` gives."""
    path = f"/api/v1/tasks/{task_id}/output"
    printer = printer or Printer()
    started = time.monotonic()
    while True:
        if follow:
            with signing.stream("GET", path, params={"follow": "true"}, timeout=None) as reply:
                if reply.status_code == 200:
                    return _follow(reply.iter_lines(), printer)
                reply.read()
        else:
            reply = signing.get(path)
            if reply.status_code == 200:
                return _page(signing, path, reply.json(), printer)
        if reply.status_code != NotFound.status or time.monotonic() - started > AUDIT_LAG_S:
            return say_error(reply.json())
        time.sleep(RETRY_SOON_S if time.monotonic() - started < SOON_S else RETRY_LATER_S)


def _follow(lines: Any, printer: Printer) -> int:
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        if "ended" in record:  # the last line: the task's end
            return exit_code(record)
        printer.part(record)
    sys.stdout.write("error: the gateway ended the stream before the task's end\n")
    return 1


def _page(signing: Any, path: str, data: dict[str, Any], printer: Printer) -> int:
    while True:
        for part in data["parts"]:
            printer.part(part)
        if not data["more"]:
            return 0
        reply = signing.get(path, params={"after": data["next"]})
        data = reply.json()
        if reply.status_code != 200:
            return say_error(data)


def register(sub: Any) -> None:
    output = sub.add_parser(
        "output", help="what a task printed (stdout, stderr), streamed by its agent as it ran"
    )
    output.add_argument("task_id")
    output.add_argument(
        "-f", "--follow", action="store_true", help="print it as it comes, until the task ends"
    )
    output.set_defaults(handler=cmd_output)
