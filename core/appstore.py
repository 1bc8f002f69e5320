"""The gateway's app store: packages in a folder, content-addressed by sha256.

A package's name is its hash, so storing the same bytes twice is one file, and a version event
(which carries the hash) always names exactly the bytes it was published with.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from elves.packages import sha256_of


class AppStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_of(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / f"{sha256}.zip"

    def put(self, data: bytes) -> str:
        """Store the bytes (atomically: a reader sees all or nothing); return their sha256.
        A file already there is rewritten if its bytes no longer match its name."""
        sha = sha256_of(data)
        path = self.path_of(sha)
        if path.is_file() and sha256_of(path.read_bytes()) == sha:
            return sha
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{sha}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return sha

    def get(self, sha256: str) -> bytes | None:
        """The stored bytes, as they are: the agent, not the store, checks them."""
        try:
            return self.path_of(sha256).read_bytes()
        except FileNotFoundError:
            return None
