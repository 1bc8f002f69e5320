"""The one codec: events to bytes and back, as Avro single-object encoding.

Wire format (Avro specification, "single object encoding"): the two bytes C3 01, the 8-byte
CRC-64-AVRO fingerprint of the writer schema's parsing canonical form (little-endian), then the
Avro binary body. No schema registry is needed: every released schema version is kept in
`avro/<Name>.v<N>.avsc`, found by its fingerprint, and resolved against the newest version of
the same name. This is the only module that imports fastavro.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from elves.errors import DecodeError
from elves.schemas.events import EVENT_TYPES, Event

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
# resolve(): an editable install links files one by one; the folder is the source one.
AVRO_DIR = Path(__file__).resolve().parent / "avro"
_FILE = re.compile(r"^(?P<name>\w+)\.v(?P<version>\d+)\.avsc$")


def _crc64_avro_table() -> list[int]:
    empty = 0xC15D213AA4D7A795  # the spec's EMPTY fingerprint
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _crc64_avro_table()


def fingerprint(canonical: str) -> bytes:
    """CRC-64-AVRO (Rabin) of a parsing canonical form, little-endian, as single-object wants."""
    fp = 0xC15D213AA4D7A795
    for byte in canonical.encode():
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    version: int
    parsed: Any
    fingerprint: bytes


def _load(directory: Path) -> dict[bytes, SchemaVersion]:
    known: dict[bytes, SchemaVersion] = {}
    for path in sorted(directory.glob("*.avsc")):
        match = _FILE.match(path.name)
        if match is None:
            raise ValueError(f"schema file {path.name} is not named <Name>.v<N>.avsc")
        raw = json.loads(path.read_text())
        parsed = fastavro.parse_schema(raw, named_schemas={})
        fp = fingerprint(to_parsing_canonical_form(raw))
        known[fp] = SchemaVersion(match["name"], int(match["version"]), parsed, fp)
    return known


class Codec:
    """Encodes with the newest schema of each event; decodes any known version into the newest."""

    def __init__(self, directory: Path = AVRO_DIR) -> None:
        self.by_fingerprint = _load(directory)
        self.latest: dict[str, SchemaVersion] = {}
        for sv in self.by_fingerprint.values():
            current = self.latest.get(sv.name)
            if current is None or sv.version > current.version:
                self.latest[sv.name] = sv
        missing = set(EVENT_TYPES) - set(self.latest)
        if missing:
            raise ValueError(f"events without a schema: {sorted(missing)}")

    def encode(self, event: Event) -> bytes:
        # Every event is flat (fields of str, int, bool, None or tuples of str): its fields
        # as they are are the record. `asdict`'s deep copy was a third of a cron fire's cost.
        return self.encode_as(type(event).__name__, dict(vars(event)))

    def encode_as(self, name: str, record: dict[str, Any], version: int | None = None) -> bytes:
        """Encode a plain record with a given schema version (the newest by default)."""
        sv = self.latest[name]
        if version is not None:
            sv = next(
                s for s in self.by_fingerprint.values() if s.name == name and s.version == version
            )
        body = io.BytesIO()
        body.write(MAGIC)
        body.write(sv.fingerprint)
        fastavro.schemaless_writer(body, sv.parsed, record)
        return body.getvalue()

    def name_of(self, data: bytes | None) -> str | None:
        """The event type a message holds, from its header alone (None if not ours): a
        consumer skips what it does not handle without decoding the body."""
        if data is None or len(data) < HEADER_SIZE or data[:2] != MAGIC:
            return None
        writer = self.by_fingerprint.get(bytes(data[2:HEADER_SIZE]))
        return None if writer is None else writer.name

    def decode(self, data: bytes | None) -> Event:
        if data is None or len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoded (no C3 01 header)")
        writer = self.by_fingerprint.get(bytes(data[2:HEADER_SIZE]))
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {data[2:HEADER_SIZE].hex()}")
        if writer.name not in EVENT_TYPES:
            # A wire record (e.g. SignedDispatch): read with `decode_record` by who expects it.
            raise DecodeError(f"{writer.name} is not an event")
        return _to_event(writer.name, self._body(writer, data))

    def decode_record(self, data: bytes | None, name: str) -> dict[str, Any]:
        """A record that is not an event (`SignedDispatch`, `DispatchClaims`) as a plain dict;
        DecodeError unless `data` is that record, in any known version."""
        if data is None or len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoded (no C3 01 header)")
        writer = self.by_fingerprint.get(bytes(data[2:HEADER_SIZE]))
        if writer is None or writer.name != name:
            found = "an unknown schema" if writer is None else writer.name
            raise DecodeError(f"expected {name}, found {found}")
        return self._body(writer, data)

    def _body(self, writer: SchemaVersion, data: bytes) -> dict[str, Any]:
        reader = self.latest[writer.name]
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(data[HEADER_SIZE:]), writer.parsed, reader.parsed
            )
        except Exception as exc:  # noqa: BLE001 - fastavro raises many kinds on a bad body
            raise DecodeError(f"{writer.name} body does not decode: {exc!r}") from exc
        if not isinstance(record, dict):
            raise DecodeError(f"{writer.name} body is not a record")
        return record


def _to_event(name: str, record: dict[str, Any]) -> Event:
    cls = EVENT_TYPES[name]
    values: dict[str, Any] = {
        # fastavro reads timestamp-millis as datetimes; events carry plain Unix milliseconds.
        k: _millis(v) if isinstance(v, dt.datetime) else v
        for k, v in record.items()
    }
    return cls(**values)


def _millis(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


def event_name(event: Event) -> str:
    return type(event).__name__


CODEC = Codec()
