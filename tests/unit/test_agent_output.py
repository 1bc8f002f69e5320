"""The rules of a task's streamed output (agent/output.py): when parts go out, what they hold."""

from __future__ import annotations

from elves.agent.output import OutputParts, Part, without_result
from elves.apps.sdk.worker import render

RESULT = render("true", "done").encode()


def test_output_waits_until_its_time_then_goes_out_in_order_of_printing() -> None:
    parts = OutputParts(1 << 20, wait_s=0.5)
    assert parts.add("stdout", b"one\n", now=10.0) == []
    assert parts.add("stderr", b"warn\n", now=10.2) == []
    assert parts.due() == 10.5
    assert parts.add("stdout", b"two\n", now=10.5) == [
        Part(0, "stdout", "one\n"),
        Part(1, "stderr", "warn\n"),
        Part(2, "stdout", "two\n"),
    ]
    assert parts.due() == float("inf")  # nothing waits


def test_a_quiet_task_s_waiting_output_is_due_when_the_runner_asks() -> None:
    parts = OutputParts(1 << 20, wait_s=0.5)
    parts.add("stdout", b"starting\n", now=1.0)
    assert parts.due() == 1.5
    assert parts.flush() == [Part(0, "stdout", "starting\n")]
    assert parts.flush() == []


def test_a_stream_s_full_part_goes_out_at_once() -> None:
    parts = OutputParts(1 << 20, part_bytes=8, wait_s=60)
    assert parts.add("stdout", b"1234", now=0) == []
    assert parts.add("stdout", b"5678", now=0) == [Part(0, "stdout", "12345678")]


def test_the_result_block_is_not_output_and_a_task_that_prints_only_it_sends_nothing() -> None:
    quiet = OutputParts(1 << 20)
    quiet.add("stdout", RESULT, now=0)
    assert quiet.finish() == []

    talky = OutputParts(1 << 20)
    talky.add("stdout", b"installing\n" + RESULT, now=0)
    talky.add("stderr", b"a warning\n", now=0)
    assert talky.finish() == [Part(0, "stdout", "installing\n"), Part(1, "stderr", "a warning\n")]


def test_without_result_keeps_what_comes_around_the_last_block() -> None:
    assert without_result(b"a" + RESULT + b"b") == b"ab"
    assert without_result(b"x<ElvesWFlag>true</ElvesWFlag><ElvesWResult>cut") == b"x"
    assert without_result(b"no tags") == b"no tags"


def test_a_character_split_across_chunks_is_sent_whole() -> None:
    parts = OutputParts(1 << 20, wait_s=0)
    snowman = "☃".encode()
    first = parts.add("stdout", b"a" + snowman[:1], now=0)
    second = parts.add("stdout", snowman[1:] + b"b", now=0)
    assert [p.data for p in first + second] == ["a", "☃b"]
    assert [p.seq for p in first + second] == [0, 1]


def test_past_the_cap_bytes_are_counted_and_the_last_part_says_how_many() -> None:
    parts = OutputParts(10, wait_s=60)
    parts.add("stdout", b"12345678", now=0)
    parts.add("stderr", b"abcdef", now=0)  # 2 fit
    parts.add("stdout", b"more", now=0)
    assert parts.finish() == [Part(0, "stdout", "12345678"), Part(1, "stderr", "ab", 8)]

    nothing_kept = OutputParts(4, wait_s=60)
    nothing_kept.add("stdout", b"1234", now=0)
    assert nothing_kept.flush() == [Part(0, "stdout", "1234")]
    nothing_kept.add("stdout", b"56", now=1)
    assert nothing_kept.finish() == [Part(1, "stdout", "", 2)]
