"""The platform started once per test session on the session's broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elves.client import client
from elves.config import Settings
from elves.local import Stack, free_port
from elves.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
AGENT = "it-agent-1"


def stack_settings(bootstrap: str, name: str, state_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test stack: fresh topics (`<name><6 hex>.`), a free gateway port, quick
    heartbeats and flushes, the sample apps."""
    values: dict[str, Any] = {
        "bootstrap": bootstrap,
        "topic_prefix": f"{name}{uuid.uuid4().hex[:8]}.",
        "state_dir": state_dir,
        "gateway_port": free_port(),
        "heartbeat_s": 1.0,
        "missed_beats": 3,
        "task_grace_s": 2.0,
        "apps_dir": ROOT / "apps" / "samples",
        "watcher_flush_s": 0.2,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture(scope="session")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = stack_settings(kafka_bootstrap, "it", tmp_path_factory.mktemp("stack"))
    ensure_topics(settings)
    stack = Stack(settings, client(settings, timeout=30))  # signs with the stack's admin key
    try:
        stack.start([AGENT])
        yield stack
    finally:
        stack.close()
