"""The audit's memory of the ids it wrote: what it answers, what it leaves to a lookup."""

from __future__ import annotations

import uuid

from elves.api.recent_ids import RecentIds, opening_horizon
from elves.schemas.events import derived_id, id_time_ms, new_id, random_id

T = 1_795_000_000_000  # Unix ms


def test_an_id_newer_than_the_horizon_is_answered_written_or_not() -> None:
    recent = RecentIds(horizon_ms=T, keep_ms=60_000)
    written, not_written = new_id(T + 5), new_id(T + 5)
    recent.add([written])
    known, unknown = recent.split([written, not_written])
    assert known == {written}
    assert unknown == []  # not_written is answered too: newer than the horizon, not written


def test_ids_it_cannot_answer_for_are_left_to_a_lookup() -> None:
    recent = RecentIds(horizon_ms=T, keep_ms=60_000)
    older = new_id(T)  # at the horizon: the table may hold it from before
    v4 = random_id()
    upper = new_id(T + 5).upper()  # not the form the table's lookup and horizon compare
    far = new_id(1 << 44)  # year 2527: past the key range the horizon is read from
    foreign = "order-42"
    recent.add([older, v4, upper, far, foreign])  # written, but nothing it could vouch for
    known, unknown = recent.split([older, v4, upper, far, foreign])
    assert known == set()
    assert unknown == [older, v4, upper, far, foreign]
    assert len(recent) == 0


def test_a_derived_id_is_answered_by_its_source_time() -> None:
    recent = RecentIds(horizon_ms=T, keep_ms=60_000)
    fresh = derived_id(new_id(T + 10), "accepted")
    stale = derived_id(new_id(T - 10), "accepted")  # derived now, from an event before the horizon
    assert id_time_ms(fresh) == T + 10
    recent.add([fresh, stale])
    assert recent.split([fresh, stale]) == ({fresh}, [stale])


def test_forgetting_raises_the_horizon_and_older_ids_go_back_to_lookups() -> None:
    recent = RecentIds(horizon_ms=0, keep_ms=60_000)
    old, new = new_id(T), new_id(T + 30_000)
    recent.add([old, new])
    recent.forget_before(T + 60_500)  # horizon T + 500: old is under it, new is not
    assert recent.horizon_ms == T + 500
    assert recent.split([old, new]) == ({new}, [old])
    assert len(recent) == 2  # old's second is not all under the horizon yet: kept, not asked
    recent.forget_before(T + 61_000)
    assert len(recent) == 1
    recent.forget_before(T)  # the horizon never goes down
    assert recent.horizon_ms == T + 1000


def test_the_opening_horizon_is_the_newest_stored_id_time() -> None:
    assert opening_horizon(None) == 0
    assert opening_horizon("") == 0  # max() of an empty String column
    assert opening_horizon(new_id(T)) == T
    # Matched the SQL (version digit 7) but is not an RFC id: look every id up.
    odd = str(uuid.UUID(int=(T << 80) | (7 << 76)))  # variant bits 00
    assert opening_horizon(odd) >= 1 << 48
