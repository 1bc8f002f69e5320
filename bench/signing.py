"""What a dispatch's signature costs: Ed25519 through libsodium (what `elves.signing` uses) and
through OpenSSL (`cryptography`'s own), and a whole `open_signed` (decode, verify, decode).

No Kafka: the primitives on one core.

    .venv/bin/python bench/signing.py [--n 3000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_sign

from elves.schemas.codec import CODEC
from elves.schemas.events import TaskDispatched
from elves.signing import SIGNED, Signer, open_signed, raw_public, verifies


def us_each(n: int, call: Callable[[], object]) -> float:
    """The median of five rounds of `n` calls, in microseconds a call."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            call()
        rounds.append((time.perf_counter() - started) / n * 1e6)
    return sorted(rounds)[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    n = parser.parse_args().n

    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    signer = Signer(key, control_ttl_s=60)
    now = int(time.time() * 1000)
    event = TaskDispatched("e1", now, "t1", 1, "a1", "noop", "run", "{}", 10, now + 15_000)
    sealed = signer.seal(event, now)
    signed = CODEC.decode_record(sealed, SIGNED)
    claims, signature = bytes(signed["claims"]), bytes(signed["signature"])
    secret = bytes(signer._secret)  # noqa: SLF001 - the primitive alone, as seal calls it
    raw = raw_public(public)

    pairs = {
        "sign": (lambda: crypto_sign(claims, secret), lambda: key.sign(claims)),
        "verify": (
            lambda: verifies(raw, signature, claims),
            lambda: public.verify(signature, claims),
        ),
    }
    print(f"Ed25519 over a dispatch's claims ({len(claims)} bytes), us a call, median of 5x{n}:")
    for name, (sodium, openssl) in pairs.items():
        ours, theirs = us_each(n, sodium), us_each(n, openssl)
        print(f"  {name:7s} libsodium {ours:6.1f}   OpenSSL {theirs:6.1f}")
    sealing = us_each(n, lambda: signer.seal(event, now))
    print(f"  seal, as the streams do (encode, sign, encode): {sealing:.1f}")
    opening = us_each(n, lambda: open_signed(sealed, raw))
    print(f"  open_signed, as an agent does (decode, verify, decode): {opening:.1f}")


if __name__ == "__main__":
    main()
