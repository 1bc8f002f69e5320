"""P-mode crons on the real broker: a center cron (CAP) and an agent cron pushed through the API
(AAP) both reach the app's processor, one line per run."""

from __future__ import annotations

from pathlib import Path

import pytest

from elves.local import Stack, wait_for

from .test_crons import add_cron, detail
from .test_processor import lines, processor


def runs_of(stack: Stack, cron_id: str) -> set[str]:
    """The task ids of a cron's runs that ended, in the audit (center fires and agent runs)."""
    rows = stack.audit(
        f"SELECT task_id FROM events WHERE cron_id = '{cron_id}' AND type = 'TaskSucceeded'"
    )
    return {str(task_id) for [task_id] in rows}


@pytest.mark.parametrize("mode", ["CAP", "AAP"])
def test_a_p_mode_cron_reaches_the_processor(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    out = tmp_path / "processor.jsonl"
    monkeypatch.setenv("APPTEST_PROCESSOR_OUT", str(out))
    with processor(stack.settings):
        cron_id = add_cron(stack, mode=mode, params={"my": mode.lower()})
        wait_for("two runs", lambda: len(runs_of(stack, cron_id)) >= 2, 30)
        reply = stack.client.delete(f"/api/v1/crons/{cron_id}")
        assert reply.status_code == 200
        ran = runs_of(stack, cron_id)
        wait_for(
            "every run at the processor",
            lambda: ran <= {line["task_id"] for line in lines(out)},
            30,
        )
    mine = [line for line in lines(out) if line["task_id"] in ran]
    assert len(mine) == len(ran), "a run reached the processor twice"
    assert {(line["flag"], line["result"]) for line in mine} == {(1, mode.lower())}
    if mode == "AAP":  # fired by the agent: the center only counts what it reports
        assert detail(stack, cron_id)["counts"]["fires"] >= 2
