"""Sealed secrets and the files that hold secrets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from elves.sealing import Sealer, SealError
from elves.secret_files import create_once, replace_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_sealed_secret_opens_with_its_key_id_only(tmp_path: Path) -> None:
    sealer = Sealer.open(tmp_path / "center")
    sealed = sealer.seal("s3cret", "k1")
    assert "s3cret" not in sealed
    assert sealer.seal("s3cret", "k1") != sealed  # a fresh nonce each time
    assert sealer.unseal(sealed, "k1", sealer.key_id) == "s3cret"
    with pytest.raises(SealError):
        sealer.unseal(sealed, "k2", sealer.key_id)  # moved onto another key
    with pytest.raises(SealError):
        sealer.unseal(sealed[:-4] + "AAAA", "k1", sealer.key_id)


def test_another_master_key_is_named_not_guessed(tmp_path: Path) -> None:
    one, two = Sealer.open(tmp_path / "a"), Sealer.open(tmp_path / "b")
    assert one.key_id != two.key_id
    with pytest.raises(SealError, match="sealed by master key"):
        two.unseal(one.seal("s", "k1"), "k1", one.key_id)


def test_the_master_key_is_made_once_and_private(tmp_path: Path) -> None:
    center = tmp_path / "center"
    first = Sealer.open(center)
    assert Sealer.open(center).key_id == first.key_id
    assert mode(center / "master.key") == 0o600 and mode(center) == 0o700
    assert [p.name for p in center.iterdir()] == ["master.key"]  # no temporary left


def test_create_once_keeps_the_first_content(tmp_path: Path) -> None:
    path = tmp_path / "d" / "f"
    assert create_once(path, b"one") == b"one"
    assert create_once(path, b"two") == b"one"
    replace_private(path, b"three")
    assert path.read_bytes() == b"three" and mode(path) == 0o600
