"""The folds loop's in-memory table: changelog records in, dirty rows out, partitions dropped."""

from __future__ import annotations

import json

from elves.streams.loop import Row, Table, same


def record(key: str, row: dict[str, object] | None) -> tuple[bytes, bytes | None]:
    return json.dumps(key).encode(), None if row is None else json.dumps(row).encode()


def test_restore_keeps_the_latest_record_of_each_key_and_a_tombstone_removes_it() -> None:
    table: Table[Row] = Table("t", same, same)
    table.load(0, *record("a", {"n": 1}))
    table.load(0, *record("a", {"n": 2}))
    table.load(1, *record("b", {"n": 1}))
    table.load(1, *record("b", None))
    assert table.items() == [("a", {"n": 2})]
    assert table.take_dirty() == {}  # what was restored is not written again


def test_a_key_changed_twice_between_commits_is_written_once_with_its_last_row() -> None:
    table: Table[Row] = Table("t", same, same)
    table.put("a", 2, {"n": 1})
    table.put("a", 2, {"n": 2})
    table.put("b", 3, {"n": 1})
    table.put("b", 3, None)
    assert table.take_dirty() == {"a": (2, {"n": 2}), "b": (3, None)}
    assert table.take_dirty() == {}
    assert table.get("a") == {"n": 2} and table.get("b") is None


def test_dropping_partitions_forgets_their_rows_and_their_unwritten_changes() -> None:
    table: Table[Row] = Table("t", same, same)
    table.load(0, *record("kept", {"n": 0}))
    table.load(1, *record("gone", {"n": 1}))
    table.put("gone-too", 1, {"n": 2})
    table.drop({1})
    assert table.items() == [("kept", {"n": 0})]
    assert table.take_dirty() == {}


def test_states_are_kept_as_objects_and_made_rows_only_when_written() -> None:
    made: list[int] = []

    def to_row(n: int) -> Row:
        made.append(n)
        return {"n": n}

    table: Table[int] = Table("t", to_row, lambda row: int(row["n"]))
    for n in range(5):
        table.put("a", 0, n)
    assert table.get("a") == 4 and made == []
    assert table.take_dirty() == {"a": (0, {"n": 4})}
    assert made == [4]
    table.load(1, *record("b", {"n": 7}))
    assert table.get("b") == 7
