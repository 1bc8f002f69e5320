"""Installed app packages on an agent: `<state>/agent/<id>/apps/<app>/<version>/`, and the
version that runs, `<app>/current`, a symlink to one of them.

Both steps are atomic, so a crash or a bad package never leaves an app half there: a version is
unpacked into a temporary folder and renamed into place; `current` is switched by making the new
link under a temporary name and renaming it over the old one. A task that already started keeps
the folder it resolved; the next one runs the new version.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
import zipfile
from pathlib import Path

from elves.config import Settings
from elves.errors import BadPackage
from elves.packages import DEFAULT_ENTRY, MANIFEST, inspect, sha256_of

CURRENT = "current"


def packages_dir(settings: Settings, agent_id: str) -> Path:
    return settings.state_dir / "agent" / agent_id / "apps"


def install(root: Path, app: str, version: str, sha256: str, data: bytes, max_bytes: int) -> Path:
    """Check and unpack one package into `<root>/<app>/<version>`; the folder. Raises BadPackage
    (the checksum, the zip, the manifest) before anything is in place."""
    actual = sha256_of(data)
    if actual != sha256:
        raise BadPackage(f"checksum mismatch: got sha256 {actual}, the version has {sha256}")
    inspect(data, app, version, max_bytes)
    target = root / app / version
    if target.is_dir():
        return target  # a version never changes, and only a whole install is ever renamed here
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{version}-{uuid.uuid4().hex}"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.extractall(tmp)  # names were checked by inspect(): nothing lands outside tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not just another install of it that came first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def activate(root: Path, app: str, version: str) -> None:
    """Point `<root>/<app>/current` at an installed version, in one rename."""
    if not (root / app / version).is_dir():
        raise BadPackage(f"{app} {version} is not installed")
    link = root / app / CURRENT
    tmp = root / app / f".{CURRENT}-{uuid.uuid4().hex}"
    os.symlink(version, tmp)  # relative: the apps folder may move with the state dir
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def prune(root: Path, app: str, keep: int) -> list[str]:
    """Remove all but the `keep` newest installed versions of `app` (the current one always
    stays); the versions removed. A rollback to a kept version needs no download; older ones
    are fetched again if activated. A task started on a removed version keeps what it opened."""
    current = current_version(root, app)
    folder = root / app
    try:
        versions = [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()]
    except FileNotFoundError:
        return []
    versions = [p for p in versions if not p.name.startswith(".")]
    versions.sort(key=lambda p: p.stat().st_mtime, reverse=True)  # newest install first
    kept = {current} | {p.name for p in versions[: max(1, keep)]}
    removed = [p.name for p in versions if p.name not in kept]
    for name in removed:
        # Renamed out of the way first, so no half-removed version is ever seen as installed.
        doomed = folder / f".old-{name}-{uuid.uuid4().hex}"
        os.rename(folder / name, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return removed


def current_version(root: Path, app: str) -> str | None:
    link = root / app / CURRENT
    try:
        return os.readlink(link) if link.resolve().is_dir() else None
    except OSError:
        return None


def installed_versions(root: Path) -> dict[str, str]:
    """{app: version} of the apps with a current version."""
    try:
        apps = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return {}
    return {app: v for app in apps if (v := current_version(root, app)) is not None}


def _manifest_text(app_dir: Path, name: str) -> str | None:
    """One text field of an installed package's manifest, or None."""
    try:
        manifest = json.loads((app_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    value = manifest.get(name) if isinstance(manifest, dict) else None
    return value if isinstance(value, str) and value else None


def entry_of(app_dir: Path) -> str:
    """The worker script a package's manifest names (app-worker.py when it names none)."""
    return _manifest_text(app_dir, "entry") or DEFAULT_ENTRY


def proxy_of(app_dir: Path) -> str | None:
    """The entry point a package's manifest names instead of python ("interp|file" or "file",
    as a task's own `proxy`), or None."""
    return _manifest_text(app_dir, "proxy")
