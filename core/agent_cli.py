"""`elves agent ...`: run an agent, and an operator's word on agents (salt-key's accept, reject,
list), plus admin tags, through the gateway."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from elves.config import Settings
from elves.selectors import parse_tags
from elves.table import call, out

Handler = Callable[[argparse.Namespace, Settings], int]


def _said(data: dict[str, Any]) -> int:
    tags = ",".join(f"{k}={v}" for k, v in sorted(data.get("tags", {}).items()))
    out(
        f"{data['agent_id']}: {data['enrolment']} (key {data.get('key_id') or '-'}) {tags}".rstrip()
    )
    return 0


def cmd_accept(args: argparse.Namespace, settings: Settings) -> int:
    data = call(settings, "POST", f"/api/v1/agents/{args.agent_id}/accept")
    return 1 if data is None else _said(data)


def cmd_reject(args: argparse.Namespace, settings: Settings) -> int:
    body = {"reason": args.reason} if args.reason else {}
    data = call(settings, "POST", f"/api/v1/agents/{args.agent_id}/reject", json=body)
    return 1 if data is None else _said(data)


def cmd_tags(args: argparse.Namespace, settings: Settings) -> int:
    tags = parse_tags(args.tags)  # "" clears them
    data = call(settings, "PUT", f"/api/v1/agents/{args.agent_id}/tags", json={"tags": tags})
    return 1 if data is None else _said(data)


def register(sub: Any, run: Handler, listing: Handler) -> None:
    """Add `elves agent [run|list|accept|reject|tags]`; `elves agent` alone runs one."""
    agent = sub.add_parser("agent", help="run an agent (no subcommand), or enrol one")
    agent.set_defaults(handler=run)
    asub = agent.add_subparsers(dest="agent_command")
    asub.add_parser("run", help="run an agent on this host").set_defaults(handler=run)
    listed = asub.add_parser("list", help="agents: liveness, enrolment, tags (as `elves agents`)")
    listed.set_defaults(handler=listing)
    accept = asub.add_parser("accept", help="accept a pending agent's key")
    accept.add_argument("agent_id")
    accept.set_defaults(handler=cmd_accept)
    reject = asub.add_parser("reject", help="reject an agent: nothing is dispatched to it")
    reject.add_argument("agent_id")
    reject.add_argument("--reason", default="")
    reject.set_defaults(handler=cmd_reject)
    tags = asub.add_parser("tags", help="set an agent's admin tags (role=web,dc=bj; '' clears)")
    tags.add_argument("agent_id")
    tags.add_argument("tags")
    tags.set_defaults(handler=cmd_tags)
