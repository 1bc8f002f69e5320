"""Scripts in bench/ run as `python bench/<name>.py`, which puts bench/ first on sys.path: a
script named like a standard or installed module would be imported in its place by every bench
script (and by what they import)."""

from __future__ import annotations

import sys
from importlib.machinery import PathFinder
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_no_bench_script_shadows_a_standard_module() -> None:
    names = sorted(p.stem for p in BENCH.glob("*.py"))
    assert "queues" in names  # the folder is the one meant
    assert [n for n in names if n in sys.stdlib_module_names] == []


def test_no_bench_script_shadows_an_installed_module() -> None:
    """`requests`, say: a summary of the broker's requests is `broker_requests.py`."""
    # As a bench script sees it: the venv's paths, not the checkout's root that pytest adds
    # (where `agent` is this project's own folder).
    paths = [p for p in sys.path if p and Path(p).resolve() not in (BENCH.parent, BENCH)]
    taken = [p.stem for p in BENCH.glob("*.py") if PathFinder.find_spec(p.stem, paths)]
    assert taken == []
