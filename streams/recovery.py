"""When a Faust worker's tables can be acted on: the clocks of its flows ask this first."""

from __future__ import annotations

from typing import Any

import faust


def tables_ready(app: faust.App) -> bool:
    """Tables restored from their changelogs and the flows reading again: before that a clock
    would act on stale or half-restored state. Faust sets `recovery.completed` at the first
    recovery and never clears it, so a later rebalance shows only as `rebalancing` (true until
    its recovery ends and the flows resume)."""
    recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
    return bool(recovery.completed.is_set()) and not app.rebalancing
