"""`elves key ...`: create API keys with scopes, list them, revoke them (an admin key's job);
and `elves call`, any REST call signed with the key file, where one would reach for curl."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from elves.client import client, write_key_file
from elves.config import Settings
from elves.scopes import OPERATIONS
from elves.table import call, out, render, when


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    body = {"name": args.name, "apps": args.app, "agents": args.agent, "operations": args.op}
    data = call(settings, "POST", "/api/v1/keys", json=body)
    if data is None:
        return 1
    scopes = f"apps {', '.join(data['apps'])}; agents {'; '.join(data['agents'])}"
    out(f"key {data['key_id']}: {scopes}; operations {', '.join(data['operations'])}")
    if args.out:
        write_key_file(Path(args.out), data["key_id"], data["secret"])
        out(f"written to {args.out} (mode 0600); sign with it: ELVES_KEY_FILE={args.out}")
    else:
        # The one time the secret is shown; the gateway never returns it again.
        out(json.dumps({"id": data["key_id"], "secret": data["secret"]}))
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    data = call(settings, "GET", "/api/v1/keys")
    if data is None:
        return 1
    rows = [
        [
            k["key_id"],
            k["name"],
            k["status"],
            ",".join(k["apps"]),
            "; ".join(k["agents"]),
            ",".join(k["operations"]),
            when(k["created_at"]),
            when(k["revoked_at"]),
        ]
        for k in data["keys"]
    ]
    headers = ["key", "name", "status", "apps", "agents", "operations", "created", "revoked"]
    out(render(headers, rows))
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    data = call(settings, "DELETE", f"/api/v1/keys/{args.key_id}")
    if data is None:
        return 1
    out(f"key {data['key_id']}: {data['status']}")
    return 0


def cmd_call(args: argparse.Namespace, settings: Settings) -> int:
    data = args.data or ""
    body = Path(data[1:]).read_bytes() if data.startswith("@") else data.encode()
    headers = {"content-type": args.content_type} if body else {}
    with client(settings, timeout=args.timeout) as gateway:
        response = gateway.request(args.method.upper(), args.path, content=body, headers=headers)
    out(response.text)
    return 0 if response.status_code < 400 else 1


def register(sub: Any) -> None:
    """Add `elves key ...` to the CLI's subcommands."""
    key = sub.add_parser("key", help="API keys: create (with scopes), list, revoke")
    ksub = key.add_subparsers(dest="key_command", required=True)
    create = ksub.add_parser("create", help="a new key; its secret is shown (or written) once")
    create.add_argument("--app", action="append", required=True, help="an app, or '*' (repeat)")
    create.add_argument(
        "--agent",
        action="append",
        required=True,
        help="an agent id, a tag selector (role=web,dc=bj), or '*' (repeat)",
    )
    create.add_argument(
        "--op", action="append", required=True, choices=OPERATIONS, help="an operation (repeat)"
    )
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("-o", "--out", help="write the key file here (0600), not to stdout")
    create.set_defaults(handler=cmd_create)
    ksub.add_parser("list", help="every key and its scopes (never a secret)").set_defaults(
        handler=cmd_list
    )
    revoke = ksub.add_parser("revoke", help="revoke a key for good")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=cmd_revoke)

    call_ = sub.add_parser("call", help="a signed REST call: elves call POST /api/v1/... -d JSON")
    call_.add_argument("method")
    call_.add_argument("path", help="the path and query, e.g. /api/v1/agents")
    call_.add_argument("-d", "--data", help="the body; @FILE reads it from a file")
    call_.add_argument("--content-type", default="application/json")
    call_.add_argument("-t", "--timeout", type=float, default=120)
    call_.set_defaults(handler=cmd_call)
