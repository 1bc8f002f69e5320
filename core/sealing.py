"""API key secrets sealed with AES-GCM under the center's master key.

HMAC signing needs the very secret on the server, so a stored secret cannot be a one-way hash:
it is sealed instead. The master key is 32 random bytes in `<state>/center/master.key` (0600),
made on first use; only the center (the gateway, and `elves up` minting its admin key) reads
it. The sealed secret goes to Kafka and is useless without that file. The key id is the
associated data, so a sealed secret cannot be moved onto another key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from elves.secret_files import create_once

NONCE_BYTES = 12  # AES-GCM's standard nonce; random per seal


class SealError(Exception):
    """A sealed secret that this master key did not seal, or that was altered."""


class Sealer:
    def __init__(self, master: bytes) -> None:
        self._aead = AESGCM(master)
        # Names the master key in each event without revealing anything of it.
        self.key_id = hashlib.sha256(b"elves-master-key:" + master).hexdigest()[:16]

    @classmethod
    def open(cls, center_dir: Path) -> Sealer:
        """The center's master key, made on first use."""
        return cls(create_once(center_dir / "master.key", AESGCM.generate_key(bit_length=256)))

    def seal(self, secret: str, key_id: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), key_id.encode())
        return base64.b64encode(nonce + sealed).decode()

    def unseal(self, sealed: str, key_id: str, sealed_with: str) -> str:
        if sealed_with != self.key_id:
            raise SealError(f"key {key_id} was sealed by master key {sealed_with}, not this one")
        try:
            raw = base64.b64decode(sealed)
            clear = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], key_id.encode())
        except (InvalidTag, ValueError) as exc:
            raise SealError(f"the sealed secret of key {key_id} does not open") from exc
        return clear.decode()
