"""The rules of a task's streamed output (agent/output.py): when parts go out, what they hold."""

from __future__ import annotations

from elves.agent.output import OutputParts, Part, without_result
from elves.apps.sdk.worker import render

RESULT = render("true", "done").encode()


def test_output_after_a_quiet_spell_goes_at_once_and_what_follows_soon_waits() -> None:
    parts = OutputParts(1 << 20, wait_s=0.5)
    assert parts.add("stdout", b"one\n", now=10.0) == [Part(0, "stdout", "one\n")]
    assert parts.due() == float("inf")  # nothing waits
    assert parts.add("stderr", b"warn\n", now=10.1) == []
    assert parts.add("stdout", b"two\n", now=10.2) == []
    assert parts.due() == 10.5  # half a second after the last part went
    assert parts.flush(now=10.5) == [Part(1, "stderr", "warn\n"), Part(2, "stdout", "two\n")]
    assert parts.add("stdout", b"three\n", now=10.6) == []  # within the spell: it waits
    assert parts.add("stdout", b"four\n", now=11.0) == [Part(3, "stdout", "three\nfour\n")]
    assert parts.add("stdout", b"five\n", now=20.0) == [Part(4, "stdout", "five\n")]


def test_a_stream_s_full_part_goes_out_at_once() -> None:
    parts = OutputParts(1 << 20, part_bytes=8, wait_s=60)
    assert parts.add("stdout", b"1234", now=0) == [Part(0, "stdout", "1234")]  # the first
    assert parts.add("stdout", b"5678", now=1) == []
    assert parts.add("stdout", b"9abcdefg", now=2) == [Part(1, "stdout", "56789abcdefg")]


def test_the_result_block_is_not_output_and_a_task_that_prints_only_it_sends_nothing() -> None:
    quiet = OutputParts(1 << 20)
    assert quiet.add("stdout", RESULT, now=0) == []  # held back, though nothing waited before
    assert quiet.due() == float("inf")  # and not waiting: the runner need not wake for it
    assert quiet.finish() == []

    talky = OutputParts(1 << 20)
    assert talky.add("stdout", b"installing\n" + RESULT, now=0) == [
        Part(0, "stdout", "installing\n")
    ]
    talky.add("stderr", b"a warning\n", now=0)
    assert talky.finish() == [Part(1, "stderr", "a warning\n")]


def test_stdout_after_a_result_tag_is_held_until_the_end_and_then_sent() -> None:
    parts = OutputParts(1 << 20, wait_s=0)
    assert parts.add("stdout", b"<ElvesWFlag> is a tag\n", now=0) == []
    assert parts.add("stdout", b"more\n", now=1) == []
    # A later tag: what came before it was output after all.
    assert parts.add("stdout", RESULT, now=2) == [
        Part(0, "stdout", "<ElvesWFlag> is a tag\nmore\n")
    ]
    assert parts.finish() == []


def test_without_result_keeps_what_comes_around_the_last_block() -> None:
    assert without_result(b"a" + RESULT + b"b") == b"ab"
    assert without_result(b"x<ElvesWFlag>true</ElvesWFlag><ElvesWResult>cut") == b"x"
    assert without_result(b"no tags") == b"no tags"


def test_a_character_split_across_chunks_is_sent_whole() -> None:
    parts = OutputParts(1 << 20, wait_s=0)
    snowman = "☃".encode()
    first = parts.add("stdout", b"a" + snowman[:1], now=0)
    second = parts.add("stdout", snowman[1:] + b"b", now=1)
    assert [p.data for p in first + second] == ["a", "☃b"]
    assert [p.seq for p in first + second] == [0, 1]
    assert OutputParts(100).add("stderr", b"\xff\xfe!", now=0) == [
        Part(0, "stderr", "\ufffd\ufffd!")  # not UTF-8: replaced, never an error
    ]


def test_past_the_cap_bytes_are_counted_and_the_last_part_says_how_many() -> None:
    parts = OutputParts(10, wait_s=60)
    assert parts.add("stdout", b"12345678", now=0) == [Part(0, "stdout", "12345678")]
    parts.add("stderr", b"abcdef", now=1)  # 2 fit
    parts.add("stdout", b"more", now=2)
    assert parts.finish() == [Part(1, "stderr", "ab", 8)]

    nothing_left = OutputParts(4, wait_s=60)
    nothing_left.add("stdout", b"1234", now=0)
    nothing_left.add("stdout", b"56", now=1)
    assert nothing_left.finish() == [Part(1, "stdout", "", 2)]
