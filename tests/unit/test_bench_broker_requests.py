"""The broker request log summary (bench/broker_requests.py): its parsing and counting."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "broker_requests.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("broker_requests", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _line(at: str, api: str, client: str) -> str:
    header = {"requestApiKeyName": api, "clientId": client, "correlationId": 1}
    return f"[{at}] Completed request:{json.dumps({'requestHeader': header})}\n"


def test_a_fleets_clients_add_up_to_one_line_each_per_second() -> None:
    br = _load()
    log = [
        _line("2026-11-29 15:00:00,000", "FETCH", "benchi4efcf8.rollout-13a19ad2"),
        "[2026-11-29 15:00:00,500] WARN something else entirely\n",
        _line("2026-11-29 15:00:01,000", "FETCH", "benchi4efcf8.rollout-a6b4f460"),
        _line("2026-11-29 15:00:02,000", "HEARTBEAT", "benchi4efcf8.agent.benchi-agent-3"),
        _line("2026-11-29 15:00:03,000", "HEARTBEAT", "benchi4efcf8.agent.benchi-agent-7"),
        _line("2026-11-29 15:00:04,000", "PRODUCE", "elves-agent-heartbeat"),
        "[2026-11-29 15:00:04,500] Completed request:{not json\n",
    ]
    requests = br.parse(log)
    assert [(api, client) for _, api, client in requests] == [
        ("FETCH", "rollout"),
        ("FETCH", "rollout"),
        ("HEARTBEAT", "agent.benchi-agent-N"),
        ("HEARTBEAT", "agent.benchi-agent-N"),
        ("PRODUCE", "elves-agent-heartbeat"),
    ]
    span, counts = br.rates(requests, None)
    assert span == 4.0
    assert counts == {
        ("FETCH", "rollout"): 2,
        ("HEARTBEAT", "agent.benchi-agent-N"): 2,
        ("PRODUCE", "elves-agent-heartbeat"): 1,
    }
    span, counts = br.rates(requests, 2.0)  # the last two seconds: from 15:00:02 on
    assert (span, sum(counts.values())) == (2.0, 3)
    assert br.rates([], None) == (0.0, {})
