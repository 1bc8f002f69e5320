"""A benchmark's temp state dir goes once it ran through, and stays when it failed or is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from elves.config import Settings
from elves.local import bench_state


def state(tmp_path: Path) -> Settings:
    where = tmp_path / "elves-bench-x"
    (where / "kafka").mkdir(parents=True)
    (where / "kafka" / "broker.log").write_text("...")
    return Settings(state_dir=where)


def test_a_run_that_went_through_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENCH_KEEP", raising=False)
    settings = state(tmp_path)
    with bench_state(settings):
        pass
    assert not settings.state_dir.exists()


def test_a_failed_run_keeps_its_logs_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BENCH_KEEP", raising=False)
    settings = state(tmp_path)
    with pytest.raises(RuntimeError), bench_state(settings):
        raise RuntimeError("the queue did not finish")
    assert (settings.state_dir / "kafka" / "broker.log").exists()
    assert str(settings.state_dir) in capsys.readouterr().err


def test_bench_keep_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BENCH_KEEP", "1")
    settings = state(tmp_path)
    with bench_state(settings):
        pass
    assert settings.state_dir.exists() and str(settings.state_dir) in capsys.readouterr().err
