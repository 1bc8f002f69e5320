"""The time-ordered event ids an audit store wrote lately: known without asking ClickHouse.

Before each insert the watcher asks the table which ids of the batch it holds already, so that a
replay adds no row. That lookup was a third of an insert's CPU. When the store is its table's
only writer (embedded chDB: one process owns the files), most of the answer is already known
here: the table held no id newer than the newest it held when the store opened (the horizon),
so an id newer than the horizon is in the table exactly when this process wrote it. Only the
other ids are looked up: older than the horizon, not time-ordered (v4, another system's), or
older than what is kept in memory (`keep_ms`, which bounds it).
"""

from __future__ import annotations

from collections.abc import Iterable

from elves.schemas.events import TIME_ORDERED_ID, canonical_time_ms

BUCKET_MS = 1000  # ids kept by the second of their time, so forgetting drops whole buckets


# The ids answered here: a UUIDv7 or v8 (`derived_id`) in its canonical text form, which the
# table's lookup compares, with a first digit 0 (every time before the year 2527), so that all
# of them sort before '1' and by their time, as text. `horizon_sql` selects the same set: its
# `< '1'` on a text that matches the pattern leaves the first digit 0.


def horizon_sql(table: str) -> str:
    """The newest stored id of those. The table is ordered by event_id, so this reads from the
    end of the key range `< '1'` and stops at the first match (10 ms at 2 M rows, where a max()
    over the column took 80)."""
    return (
        f"SELECT event_id FROM {table} WHERE event_id < '1'"
        f" AND match(event_id, '^{TIME_ORDERED_ID}$') ORDER BY event_id DESC LIMIT 1"
    )


def _time_of(event_id: str) -> int | None:
    """An answered id's Unix milliseconds (its first 48 bits), else None."""
    return canonical_time_ms(event_id) if event_id[:1] == "0" else None


def opening_horizon(newest_stored: str | None) -> int:
    """The horizon from `horizon_sql`'s answer (None: no row): 0 for a table without such ids
    (every answered id is then new to it)."""
    if not newest_stored:
        return 0
    time_ms = _time_of(newest_stored)
    # Not what the SQL should match: look every id up, to be safe.
    return (1 << 48) if time_ms is None else time_ms


class RecentIds:
    """The ids written since the store opened whose time is after `horizon_ms`."""

    def __init__(self, horizon_ms: int, keep_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self.keep_ms = keep_ms
        self._buckets: dict[int, set[str]] = {}

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._buckets.values())

    def split(self, ids: Iterable[str]) -> tuple[set[str], list[str]]:
        """(the ids known to be in the table, the ids this cannot answer for: to look up)."""
        written: set[str] = set()
        unknown: list[str] = []
        for event_id in ids:
            time_ms = _time_of(event_id)
            if time_ms is None or time_ms <= self.horizon_ms:
                unknown.append(event_id)
            elif event_id in self._buckets.get(time_ms // BUCKET_MS, ()):
                written.add(event_id)
        return written, unknown

    def add(self, ids: Iterable[str]) -> None:
        """Ids just written to the table."""
        for event_id in ids:
            time_ms = _time_of(event_id)
            if time_ms is not None and time_ms > self.horizon_ms:
                self._buckets.setdefault(time_ms // BUCKET_MS, set()).add(event_id)

    def forget_before(self, now_ms: int) -> None:
        """Raise the horizon to `now_ms - keep_ms` (it never goes down) and forget the ids under
        it: ids that old are looked up again."""
        horizon = now_ms - self.keep_ms
        if horizon <= self.horizon_ms:
            return
        self.horizon_ms = horizon
        for bucket in [b for b in self._buckets if (b + 1) * BUCKET_MS - 1 <= horizon]:
            del self._buckets[bucket]
