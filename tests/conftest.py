"""Test fixtures: the real broker once per session, unique topic prefixes per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from elves.config import Settings

ROOT = Path(__file__).resolve().parent.parent
TEST_STATE = Path(os.environ.get("ELVES_TEST_STATE", ROOT / "state" / "test"))
TEST_BOOTSTRAP = os.environ.get("ELVES_TEST_KAFKA", "127.0.0.1:19192")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real KRaft broker for the whole session, started by the project's own script."""
    env = {**os.environ, "ELVES_KAFKA": TEST_BOOTSTRAP, "ELVES_STATE_DIR": str(TEST_STATE)}
    script = str(ROOT / "infra" / "kafka.sh")
    # On empty storage: every test makes its own topics, so a data dir kept from earlier
    # sessions grows by thousands of partitions, and a broker loading 8,000 of them at its start
    # did not answer within the 60 s the script gives it (a developer's machine, not CI's).
    subprocess.run(["bash", script, "stop"], check=True, env=env)
    shutil.rmtree(TEST_STATE / "kafka" / "data", ignore_errors=True)
    subprocess.run(["bash", script, "start"], check=True, env=env)
    yield TEST_BOOTSTRAP


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own topic prefix and state dir, the session's broker."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    return Settings(bootstrap=kafka_bootstrap, topic_prefix=prefix, state_dir=tmp_path)
