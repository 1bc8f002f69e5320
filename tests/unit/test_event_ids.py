"""Event ids: fresh ones sort by the time they were made, derived ones are the same on replay."""

from __future__ import annotations

import time
import uuid

import pytest

from elves.schemas.events import derived_id, id_time_ms, new_id, random_id

NAMESPACE = uuid.UUID("6f1c1f0e-5b1d-4e8e-9a55-e1f3e5c0e1f5")  # the one ids derived before v7 used


def millis(event_id: str) -> int:
    return uuid.UUID(event_id).int >> 80


def test_new_ids_are_v7_stamped_with_the_time_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    made = [new_id() for _ in range(10_000)]
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == len(made)
    for event_id in made[:100]:
        parsed = uuid.UUID(event_id)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == event_id
    assert all(before <= millis(i) <= after for i in made)


def test_new_ids_sort_by_the_millisecond_they_were_made_in() -> None:
    times = range(1_795_000_000_000, 1_795_000_000_050)
    made = [new_id(at) for at in times]
    assert [millis(i) for i in made] == list(times)
    # As text, too: the audit orders its table by the id's string.
    assert sorted(made) == made


def test_an_id_derived_from_a_v7_keeps_its_time_and_is_the_same_on_replay() -> None:
    source = new_id()
    derived = derived_id(source, "TaskSucceeded")
    parsed = uuid.UUID(derived)
    assert parsed.version == 8 and parsed.variant == uuid.RFC_4122
    assert millis(derived) == millis(source)
    assert derived_id(source, "TaskSucceeded") == derived
    assert derived_id(source, "TaskFailed") != derived
    assert derived_id(new_id(), "TaskSucceeded") != derived
    # Derived from a derived id (a chain of streams), still beside the first source.
    assert millis(derived_id(derived, "QueueTaskSucceeded")) == millis(source)


@pytest.mark.parametrize("source", [str(uuid.uuid4()), "an id from another system"])
def test_an_id_derived_from_any_other_source_is_the_uuid5_it_was(source: str) -> None:
    # A replay of an input written before v7 ids must derive the ids it derived then.
    assert derived_id(source, "TaskAccepted") == str(
        uuid.uuid5(NAMESPACE, f"{source}:TaskAccepted")
    )


def test_ids_of_things_people_read_differ_in_their_first_characters() -> None:
    # Ids made in the same moment: v7 ones share their first 8 characters, these must not.
    made = [random_id() for _ in range(100)]
    assert all(uuid.UUID(i).version == 4 for i in made)
    assert len({i[:8] for i in made}) == len(made)


def test_an_id_derived_from_a_key_takes_the_time_the_input_fixes() -> None:
    # A cron fire's id comes from "<cron>:<scheduled time>": its scheduled time is its time.
    key = "cron-1:1795000000000"
    fired = derived_id(key, "fired", at=1_795_000_000_000)
    assert uuid.UUID(fired).version == 8 and millis(fired) == 1_795_000_000_000
    assert derived_id(key, "fired", at=1_795_000_000_000) == fired
    assert derived_id(key, "skipped", at=1_795_000_000_000) != fired
    # A time-ordered source keeps its own time: `at` is only for sources without one.
    source = new_id(1_700_000_000_000)
    assert millis(derived_id(source, "fired", at=1_795_000_000_000)) == 1_700_000_000_000


def test_the_time_of_an_id_is_read_from_any_form_a_uuid_parse_reads() -> None:
    source = new_id(1_795_000_000_123)
    forms = [source, source.upper(), "{" + source + "}", f"urn:uuid:{source}"]
    assert [id_time_ms(f) for f in forms] == [1_795_000_000_123] * 4
    # An id derived from any of them sorts beside its source, as before the canonical fast path.
    assert [id_time_ms(derived_id(f, "x")) for f in forms] == [1_795_000_000_123] * 4
    assert id_time_ms(str(uuid.uuid4())) is None
    assert id_time_ms("not an id") is None
