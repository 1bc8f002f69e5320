"""The platform started once per test session on the session's broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from elves.client import client
from elves.config import Settings
from elves.local import Stack, free_port
from elves.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
AGENT = "it-agent-1"


@pytest.fixture(scope="session")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = Settings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"it{uuid.uuid4().hex[:8]}.",
        state_dir=tmp_path_factory.mktemp("stack"),
        gateway_port=free_port(),
        heartbeat_s=1.0,
        missed_beats=3,
        task_grace_s=2.0,
        apps_dir=ROOT / "apps" / "samples",
        watcher_flush_s=0.2,
    )
    ensure_topics(settings)
    stack = Stack(settings, client(settings, timeout=30))  # signs with the stack's admin key
    try:
        stack.start([AGENT])
        yield stack
    finally:
        stack.close()
