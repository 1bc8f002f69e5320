"""Files that hold secrets: mode 0600 in a folder of mode 0700, written atomically.

The file is written and synced under a temporary name with its final mode from the start (never
a moment readable by others), then put in place in one step: a reader sees the whole file or
none.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def _private_temp(path: Path, data: bytes) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return temp


def create_once(path: Path, data: bytes) -> bytes:
    """Write `data` unless the file exists; return what the file holds. Two processes that race
    (`elves up` and the gateway both starting) end with the same content: the link fails for
    the second, which then reads the first's."""
    if path.exists():
        return path.read_bytes()
    temp = _private_temp(path, data)
    try:
        os.link(temp, path)
    except FileExistsError:
        return path.read_bytes()
    finally:
        temp.unlink()
    return data


def replace_private(path: Path, data: bytes) -> None:
    """Write `data` in place of whatever the file held."""
    temp = _private_temp(path, data)
    os.replace(temp, path)
