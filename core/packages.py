"""App packages: `{app}_{version}.zip` with the worker folder's files at its root.

`inspect()` is the one check of a package, run by the gateway on publish and again by the agent
before it installs: a zip, no entry that could land outside the install folder (zip-slip:
absolute paths, `..`, links), within the size limits, with a `manifest.json` that names an
`entry` file in the package and agrees with the app and version it is published as.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from elves.errors import BadPackage, PackageTooLarge

MANIFEST = "manifest.json"
DEFAULT_ENTRY = "app-worker.py"
# Unpacked, a package may be this many times its zip size at most (a zip bomb is not an app).
UNPACKED_FACTOR = 10
APP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a Python module and class name
# No `_` in a version: in `{app}_{version}.zip` the last `_` splits the two.
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}$")
_FILE_NAME = re.compile(r"^(?P<app>[A-Za-z_]\w*)_(?P<version>[A-Za-z0-9][A-Za-z0-9.+-]*)\.zip$")


@dataclass(frozen=True)
class Manifest:
    entry: str
    proxy: str | None = None
    description: str = ""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_names(app: str, version: str) -> None:
    if not APP_NAME.match(app):
        raise BadPackage(f"bad app name {app!r}: letters, digits and _, not first a digit")
    if not VERSION.match(version):
        raise BadPackage(f"bad version {version!r}: letters, digits and . + -, up to 64")


def name_of(filename: str) -> tuple[str, str] | None:
    """(app, version) from `{app}_{version}.zip`, ELVES' package name; None if it is not one.
    A version has no `_`, so the last one splits them: `my_app_1.0.zip` is `my_app` 1.0."""
    match = _FILE_NAME.match(Path(filename).name)
    return (match["app"], match["version"]) if match else None


def inspect(data: bytes, app: str, version: str, max_bytes: int) -> Manifest:
    """The package's manifest, once every check passed; BadPackage (413.2) says what did not."""
    check_names(app, version)
    if len(data) > max_bytes:
        raise PackageTooLarge(f"the package is {len(data)} bytes, over the limit of {max_bytes}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            _check_entries(infos, max_bytes * UNPACKED_FACTOR)
            bad = zf.testzip()
            if bad is not None:
                raise BadPackage(f"the package is corrupt: {bad} fails its CRC")
            names = {i.filename for i in infos}
            if MANIFEST not in names:
                raise BadPackage(f"no {MANIFEST} at the package's root")
            raw = zf.read(MANIFEST)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise BadPackage(f"not a zip: {exc}") from exc
    return _manifest(raw, names, app, version)


def _check_entries(infos: list[zipfile.ZipInfo], max_unpacked: int) -> None:
    total = 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if (
            name.startswith(("/", "\\"))
            or "\\" in name
            or ":" in (parts[0] if parts else "")
            or ".." in parts
        ):
            raise BadPackage(f"unsafe path in the package: {name!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BadPackage(f"a link in the package: {name!r}")
        total += info.file_size
        if total > max_unpacked:
            raise BadPackage(f"the package unpacks to over {max_unpacked} bytes")


def _manifest(raw: bytes, names: set[str], app: str, version: str) -> Manifest:
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise BadPackage(f"{MANIFEST} is not JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BadPackage(f"{MANIFEST} must be a JSON object")
    for key, want in (("app", app), ("version", version)):
        # Absent, they are derived from where the package is published; present, they agree.
        if key in manifest and str(manifest[key]) != want:
            raise BadPackage(f"{MANIFEST} says {key} {manifest[key]!r}, published as {want!r}")
    entry = manifest.get("entry")
    if not isinstance(entry, str) or not entry:
        raise BadPackage(f"{MANIFEST} needs an `entry`: the worker script, e.g. {DEFAULT_ENTRY}")
    if entry not in names or ".." in PurePosixPath(entry).parts:
        raise BadPackage(f"the entry {entry!r} is not a file in the package")
    proxy = manifest.get("proxy")
    if proxy is not None and not isinstance(proxy, str):
        raise BadPackage(f"{MANIFEST}: `proxy` must be text, e.g. 'python3|app-worker.py'")
    description = manifest.get("description", "")
    return Manifest(entry, proxy or None, str(description))


def zip_dir(folder: Path) -> bytes:
    """A worker folder as a package: its files at the zip's root (caches and dotfiles left out)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
                continue
            if path.is_file() and not path.is_symlink():
                zf.write(path, rel.as_posix())
    return buf.getvalue()
