"""The folds loop's in-memory table: changelog records in, dirty rows out, partitions dropped."""

from __future__ import annotations

import json

from elves.streams.loop import Table


def record(key: str, row: dict[str, object] | None) -> tuple[bytes, bytes | None]:
    return json.dumps(key).encode(), None if row is None else json.dumps(row).encode()


def test_restore_keeps_the_latest_record_of_each_key_and_a_tombstone_removes_it() -> None:
    table = Table("t")
    table.load(0, *record("a", {"n": 1}))
    table.load(0, *record("a", {"n": 2}))
    table.load(1, *record("b", {"n": 1}))
    table.load(1, *record("b", None))
    assert table.items() == [("a", {"n": 2})]
    assert table.take_dirty() == {}  # what was restored is not written again


def test_a_key_changed_twice_between_commits_is_written_once_with_its_last_row() -> None:
    table = Table("t")
    table.put("a", 2, {"n": 1})
    table.put("a", 2, {"n": 2})
    table.put("b", 3, {"n": 1})
    table.put("b", 3, None)
    assert table.take_dirty() == {"a": (2, {"n": 2}), "b": (3, None)}
    assert table.take_dirty() == {}
    assert table.get("a") == {"n": 2} and table.get("b") is None


def test_dropping_partitions_forgets_their_rows_and_their_unwritten_changes() -> None:
    table = Table("t")
    table.load(0, *record("kept", {"n": 0}))
    table.load(1, *record("gone", {"n": 1}))
    table.put("gone-too", 1, {"n": 2})
    table.drop({1})
    assert table.items() == [("kept", {"n": 0})]
    assert table.take_dirty() == {}
