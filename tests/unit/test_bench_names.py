"""Scripts in bench/ run as `python bench/<name>.py`, which puts bench/ first on sys.path: a
script named like a standard module would be imported in its place by every bench script."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_no_bench_script_shadows_a_standard_module() -> None:
    names = sorted(p.stem for p in BENCH.glob("*.py"))
    assert "queues" in names  # the folder is the one meant
    assert [n for n in names if n in sys.stdlib_module_names] == []
