"""The processor contract without Kafka: loading, dispatch by func, the fallback, the ledger."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from elves.apps.sdk.processor import Ledger, Processor, task_dict
from elves.schemas.events import ProcessorResult

SAMPLES = Path(__file__).resolve().parents[2] / "apps" / "samples"

RESULT = ProcessorResult(
    event_id="e1",
    occurred_at=1_700_000_000_000,
    task_id="t1",
    attempt=1,
    agent_id="a1",
    app="",  # set per test: the app name is unique so loaded modules never collide
    func="helloword",
    params=json.dumps({"my": "toryzen", "n": 2}),
    status="succeeded",
    worker_flag=1,
    worker_message="toryzen",
    worker_costtime=12,
    queue_id="q1",
)

CALLS = "CALLS: list = []"


def make_app(apps_dir: Path, body: str) -> tuple[str, ProcessorResult]:
    """A processor.py for a fresh app name; its methods append their arguments to CALLS."""
    app = f"p{uuid.uuid4().hex[:8]}"
    (apps_dir / app).mkdir(parents=True)
    (apps_dir / app / "processor.py").write_text(f"{CALLS}\n\n\nclass {app}:\n{body}")
    return app, replace(RESULT, app=app)


def calls(processor: Processor) -> list[Any]:
    return list(sys.modules[f"elves_processor_{processor.app}"].CALLS)


RECORD = "        CALLS.append(({name!r}, task, flag, result, costtime))\n"


def method(name: str, extra: str = "") -> str:
    return f"    def {name}(self, task, flag, result, costtime):\n{extra}" + RECORD.format(
        name=name
    )


def test_the_method_named_by_func_gets_the_task_and_the_outcome(tmp_path: Path) -> None:
    app, result = make_app(tmp_path, method("helloword") + method("default"))
    processor = Processor.load(tmp_path, app)
    assert processor.handle(result) == "done"
    [(name, task, flag, text, costtime)] = calls(processor)
    assert name == "helloword"
    assert (flag, text, costtime) == (1, "toryzen", 12)
    assert task["params"] == {"my": "toryzen", "n": 2}  # parsed, not JSON text
    assert {k: task[k] for k in ("task_id", "attempt", "agent_id", "app", "func")} == {
        "task_id": "t1",
        "attempt": 1,
        "agent_id": "a1",
        "app": app,
        "func": "helloword",
    }
    assert (task["status"], task["queue_id"]) == ("succeeded", "q1")


def test_default_is_called_when_the_class_has_no_method_for_func(tmp_path: Path) -> None:
    app, result = make_app(tmp_path, method("default"))
    processor = Processor.load(tmp_path, app)
    assert processor.handle(replace(result, func="other", worker_flag=-1)) == "done"
    [(name, task, flag, _text, _cost)] = calls(processor)
    assert (name, task["func"], flag) == ("default", "other", -1)


def test_no_method_and_no_default_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, result = make_app(tmp_path, method("helloword"))
    processor = Processor.load(tmp_path, app)
    assert processor.handle(replace(result, func="other")) == "skipped"
    assert calls(processor) == []
    assert "has no method 'other'" in caplog.text


def test_private_funcs_are_never_called(tmp_path: Path) -> None:
    app, result = make_app(tmp_path, method("_secret"))
    processor = Processor.load(tmp_path, app)
    assert processor.handle(replace(result, func="_secret")) == "skipped"
    assert calls(processor) == []


def test_an_exception_is_logged_with_its_traceback_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, result = make_app(tmp_path, method("helloword", "        raise RuntimeError('bad')\n"))
    processor = Processor.load(tmp_path, app)
    with caplog.at_level(logging.ERROR):
        assert processor.handle(result) == "failed"
    assert "Traceback (most recent call last)" in caplog.text
    assert "RuntimeError: bad" in caplog.text


def test_params_that_are_not_json_are_passed_as_text_and_empty_is_none() -> None:
    assert task_dict(replace(RESULT, params="{nope"))["params"] == "{nope"
    assert task_dict(replace(RESULT, params=""))["params"] == {}


def test_a_missing_processor_or_class_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="has no processor"):
        Processor.load(tmp_path, "nosuch")
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "processor.py").write_text("class other:\n    pass\n")
    with pytest.raises(ImportError, match="no class named 'wrong'"):
        Processor.load(tmp_path, "wrong")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "processor.py").write_text("odd = 1\n")
    with pytest.raises(TypeError, match="must be a class"):
        Processor.load(tmp_path, "odd")


def test_apptest_writes_one_line_per_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv("APPTEST_PROCESSOR_OUT", str(out))
    processor = Processor.load(SAMPLES, "apptest")
    assert processor.handle(replace(RESULT, app="apptest")) == "done"
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"task_id": "t1", "flag": 1, "result": "toryzen", "costtime": 12}
    ]


def test_the_ledger_remembers_handled_events_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "processor" / "app.sqlite"
    ledger = Ledger(path)
    assert not ledger.seen("e1")
    ledger.mark(RESULT, "done")
    ledger.mark(RESULT, "done")  # a second mark of the same id is harmless
    ledger.close()
    reopened = Ledger(path)
    try:
        assert reopened.seen("e1")
        assert not reopened.seen("e2")
    finally:
        reopened.close()
