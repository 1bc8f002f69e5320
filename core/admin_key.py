"""The first key: `elves up` (and the local stack of tests and benchmarks) mints an admin key when
there is none, so the gateway is never open, not even on a first run.

The key's event goes to `keys` like any other (its secret sealed); the secret itself goes only
to `<state>/center/admin.key` (0600), the file every client signs with by default. The key is
kept while the file names a key that is still active and opens with this center's master key;
otherwise (a first run, a revoked admin key, a new topic prefix) a new one replaces it.
"""

from __future__ import annotations

import time
from pathlib import Path

from elves import apikeys
from elves.client import read_key_file, write_key_file
from elves.config import Settings
from elves.errors import MissingSignature
from elves.kafka import producer
from elves.keyring import KeyRing, write
from elves.scopes import ANY, Scopes
from elves.sealing import Sealer
from elves.topics import CORE_TOPICS, ensure_topics

ADMIN = Scopes(apps=(ANY,), agents=(ANY,), operations=("admin",))


def _standing(settings: Settings, ring: KeyRing, sealer: Sealer) -> bool:
    path = settings.admin_key_path
    if not path.exists():
        return False
    try:
        key_id = read_key_file(path).key_id
    except MissingSignature:
        return False
    state = ring.get(key_id)
    return state is not None and state.active and state.sealed_with == sealer.key_id


def ensure_admin_key(settings: Settings) -> tuple[Path, bool]:
    """The admin key file, and whether it was minted now."""
    ensure_topics(settings, tuple(t for t in CORE_TOPICS if t.name == "keys"))
    sealer = Sealer.open(settings.center_dir)
    ring = KeyRing(settings)
    ring.start()
    try:
        if _standing(settings, ring, sealer):
            return settings.admin_key_path, False
    finally:
        ring.stop()
    key_id, secret = apikeys.new_key_id(), apikeys.new_secret()
    event = apikeys.created(
        key_id,
        "admin (elves up)",
        ADMIN,
        sealer.seal(secret, key_id),
        sealer.key_id,
        int(time.time() * 1000),
        created_by=None,
    )
    # Durable before the file names it.
    write(producer(settings, "admin-key"), settings, event, timeout=30)
    write_key_file(settings.admin_key_path, key_id, secret)
    return settings.admin_key_path, True
