"""`elves app ...`: publish app packages, list them, activate a version (or roll back), and
say which agents an app may run on."""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from elves.config import Settings
from elves.packages import MANIFEST, name_of, zip_dir
from elves.table import call, out, render, when


def _manifest(data: bytes) -> dict[str, Any]:
    """The package's manifest, or {} when there is none to read (the gateway says why)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            manifest = json.loads(zf.read(MANIFEST))
    except (zipfile.BadZipFile, KeyError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def package_of(path: Path, app: str | None, version: str | None) -> tuple[str, str, bytes]:
    """(app, version, zip bytes) of a worker folder or a zip. The names come from the options,
    else the manifest, else the folder's name or the zip's `{app}_{version}.zip`."""
    data = zip_dir(path) if path.is_dir() else path.read_bytes()
    manifest = _manifest(data)
    from_name = name_of(path.name) if path.is_file() else (path.name, None)
    app = app or manifest.get("app") or (from_name[0] if from_name else None)
    version = version or manifest.get("version") or (from_name[1] if from_name else None)
    if not app or not version:
        raise ValueError(
            f"cannot tell the app and version of {path}: name them (--app, --version), "
            "put them in manifest.json, or name the zip {app}_{version}.zip"
        )
    return str(app), str(version), data


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.path)
    if not path.exists():
        out(f"error: no such folder or file: {path}")
        return 1
    try:
        app, version, data = package_of(path, args.app, args.version)
    except ValueError as exc:
        out(f"error [413.2]: {exc}")
        return 1
    data_out = call(
        settings,
        "POST",
        f"/api/v1/apps/{app}/versions/{version}",
        content=data,
        params={"activate": "false" if args.no_activate else "true"},
        headers={"content-type": "application/zip"},
    )
    if data_out is None:
        return 1
    out(f"{app} {version} sha256 {data_out['sha256']} ({data_out['size']} bytes)")
    out(f"active: {data_out['active']}")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    data = call(settings, "GET", "/api/v1/apps")
    if data is None:
        return 1
    rows = [
        [
            a["app"],
            v["version"],
            "*" if v["version"] == a["active"] else "",
            v["sha256"][:16],
            v["size"],
            when(v["published_at"]),
            v["description"],
        ]
        for a in data["apps"]
        for v in a["versions"]
    ]
    out(render(["app", "version", "active", "sha256", "bytes", "published (UTC)", "about"], rows))
    return 0


def cmd_activate(args: argparse.Namespace, settings: Settings) -> int:
    data = call(settings, "POST", f"/api/v1/apps/{args.app}/active", json={"version": args.version})
    if data is None:
        return 1
    out(f"{args.app}: {data['previous'] or '(none)'} -> {data['active']}")
    return 0


def _show_permission(data: dict[str, Any]) -> None:
    if data["anywhere"]:
        where = "anywhere"
    else:
        parts = [f"agent {a}" for a in data["agents"]]
        parts += [f"selector {s}" for s in data["selectors"]]
        where = ", ".join(parts) or "nowhere"
    out(
        f"{data['app']} may run on: {where}"
        + (" (no rule: the default)" if data["default"] else "")
    )
    out(f"known agents it may run on now: {', '.join(data['allowed_agents']) or '(none)'}")


def cmd_allow(args: argparse.Namespace, settings: Settings) -> int:
    if args.anywhere == bool(args.agent or args.selector):
        out("error [403.1]: give --agent and/or --selector, or --anywhere alone")
        return 1
    body: dict[str, Any] = (
        {"anywhere": True}
        if args.anywhere
        else {"agents": args.agent or [], "selectors": args.selector or []}
    )
    data = call(settings, "PUT", f"/api/v1/apps/{args.app}/permissions", json=body)
    if data is None:
        return 1
    _show_permission(data)
    return 0


def cmd_permissions(args: argparse.Namespace, settings: Settings) -> int:
    data = call(settings, "GET", f"/api/v1/apps/{args.app}/permissions")
    if data is None:
        return 1
    _show_permission(data)
    return 0


def register(sub: Any) -> None:
    """Add `elves app ...` to the CLI's subcommands."""
    app = sub.add_parser("app", help="app packages (publish, list, activate) and permissions")
    asub = app.add_subparsers(dest="app_command", required=True)
    publish = asub.add_parser("publish", help="publish a worker folder or a zip as a version")
    publish.add_argument("path", help="a worker folder (zipped here) or {app}_{version}.zip")
    publish.add_argument("--app", help="the app's name (default: manifest, folder or zip name)")
    publish.add_argument("--version", help="the version (default: manifest or zip name)")
    publish.add_argument(
        "--no-activate", action="store_true", help="store it only; activate it later"
    )
    publish.set_defaults(handler=cmd_publish)
    asub.add_parser("list", help="every app, its versions, the active one").set_defaults(
        handler=cmd_list
    )
    activate = asub.add_parser("activate", help="run this version (an older one: a rollback)")
    activate.add_argument("app")
    activate.add_argument("version")
    activate.set_defaults(handler=cmd_activate)
    allow = asub.add_parser(
        "allow", help="the agents an app may run on (replaces its rule; 413.5 elsewhere)"
    )
    allow.add_argument("app")
    allow.add_argument("--agent", action="append", help="an agent id (repeat for more)")
    allow.add_argument(
        "--selector", action="append", help="every agent with these tags, e.g. role=web,dc!=bj"
    )
    allow.add_argument("--anywhere", action="store_true", help="every agent: lift the rule")
    allow.set_defaults(handler=cmd_allow)
    permissions = asub.add_parser("permissions", help="where an app may run, and on which now")
    permissions.add_argument("app")
    permissions.set_defaults(handler=cmd_permissions)
