"""The codec: every schema round-trips; older writer versions are read with the newest."""

from __future__ import annotations

import dataclasses
import json

import pytest

from elves.errors import DecodeError
from elves.schemas.codec import AVRO_DIR, CODEC, HEADER_SIZE, MAGIC, fingerprint
from elves.schemas.events import EVENT_TYPES, TaskResultReported


def sample(cls: type) -> object:
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.name == "occurred_at" or f.name.endswith("_at"):
            values[f.name] = 1_700_000_000_123
        elif f.type in ("int", "int | None"):
            values[f.name] = 7
        elif f.type in ("float",):
            values[f.name] = 1.5
        elif f.type in ("bool",):
            values[f.name] = True
        elif "Mapping" in str(f.type):
            values[f.name] = {"apptest": "1.0"}
        elif "tuple" in str(f.type):
            values[f.name] = ("a", "b")
        else:
            values[f.name] = f"{f.name}-value"
    return cls(**values)


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_every_event_round_trips(name: str) -> None:
    event = sample(EVENT_TYPES[name])
    data = CODEC.encode(event)  # type: ignore[arg-type]
    assert data[:2] == MAGIC
    assert data[2:HEADER_SIZE] == CODEC.latest[name].fingerprint
    assert CODEC.decode(data) == event


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_dataclass_fields_match_the_newest_schema(name: str) -> None:
    newest = CODEC.latest[name]
    schema = json.loads((AVRO_DIR / f"{name}.v{newest.version}.avsc").read_text())
    assert [f["name"] for f in schema["fields"]] == [
        f.name for f in dataclasses.fields(EVENT_TYPES[name])
    ]


def test_an_older_writer_version_is_read_with_the_newest() -> None:
    v1 = {
        "event_id": "e",
        "occurred_at": 1_700_000_000_000,
        "task_id": "t",
        "attempt": 1,
        "agent_id": "a",
        "app": "apptest",
        "func": "helloword",
        "worker_flag": 1,
        "worker_message": "toryzen",
        "worker_costtime": 3,
    }
    data = CODEC.encode_as("TaskResultReported", v1, version=1)
    event = CODEC.decode(data)
    assert isinstance(event, TaskResultReported)
    assert event.truncated is False  # the v2 field's default
    assert event.worker_message == "toryzen"
    assert (event.started_at, event.pid) == (None, None)  # the v3 fields' defaults
    assert event.output_parts is None  # v4's: an older agent did not count its output parts


def test_a_result_without_a_process_keeps_its_start_null() -> None:
    """A task cancelled before it ran has no start: null, not 0 (the epoch)."""

    def result(started_at: int | None, pid: int | None) -> TaskResultReported:
        return TaskResultReported(
            "r",
            1_700_000_000_123,
            "t",
            1,
            "a",
            "apptest",
            "helloword",
            -1,
            "cancelled",
            0,
            started_at=started_at,
            pid=pid,
        )

    never, ran = result(None, None), result(1_700_000_000_100, 4242)
    assert CODEC.decode(CODEC.encode(never)) == never
    assert (never.started_at, never.pid) == (None, None)
    assert CODEC.decode(CODEC.encode(ran)) == ran


def test_fingerprint_is_crc64_avro() -> None:
    # The Avro specification's fingerprint of the schema "null" is 0x63dd24e7cc258f8a.
    assert fingerprint('"null"') == (0x63DD24E7CC258F8A).to_bytes(8, "little")


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", MAGIC + b"\x00" * 8 + b"x", None],
    ids=["empty", "no-header", "unknown-fingerprint", "none"],
)
def test_undecodable_messages_raise_a_decode_error(data: bytes | None) -> None:
    with pytest.raises(DecodeError) as err:
        CODEC.decode(data)
    assert err.value.code == "422.1"


def test_a_known_fingerprint_with_a_broken_body_is_a_decode_error() -> None:
    header = CODEC.encode(sample(EVENT_TYPES["Heartbeat"]))[:HEADER_SIZE]  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        CODEC.decode(header + b"\xff\xff\xff")


def test_every_event_is_flat_so_its_fields_are_its_record() -> None:
    """`Codec.encode` writes an event's fields as they are (no deep copy): that holds only while
    no event holds another dataclass or a mutable list."""
    from dataclasses import fields

    from elves.schemas.events import EVENT_TYPES

    allowed = {
        "str",
        "int",
        "bool",
        "float",
        "str | None",
        "int | None",
        "tuple[str, ...]",
        "Mapping[str, str]",
    }
    found = {str(f.type) for cls in EVENT_TYPES.values() for f in fields(cls)}
    assert found <= allowed, found - allowed
