"""The folds loop asks a partition's offsets again while the broker does not answer."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from elves.config import Settings
from elves.streams.loop import UNKNOWN_END, Loop

TP = TopicPartition("t", 0)


class Flaky:
    """Answers watermark requests after `failures` transport errors (the broker going away)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.asked = 0

    def get_watermark_offsets(
        self, _tp: TopicPartition, timeout: float, cached: bool
    ) -> tuple[int, int]:
        self.asked += 1
        if self.asked <= self.failures:
            raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
        return 3, 7


def loop() -> Loop:
    # Nothing here reaches a broker: the producer is built, never used.
    return Loop(Settings(bootstrap="127.0.0.1:1"), "unit")


def test_offsets_are_asked_again_until_the_broker_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("elves.streams.loop.time.sleep", lambda _s: None)
    client = Flaky(failures=2)
    assert loop()._watermarks(client, TP) == (3, 7)  # type: ignore[arg-type]
    assert client.asked == 3


def test_a_stopping_loop_gives_up_at_once() -> None:
    stopping = loop()
    stopping.stop()
    with pytest.raises(KafkaException):
        stopping._watermarks(Flaky(failures=1), TP)  # type: ignore[arg-type]


def test_an_assignment_gives_up_on_ends_it_cannot_learn_and_the_clocks_wait_for_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As after a broker restart: "Unknown partition" every time, for 90 s in the outage test.
    monkeypatch.setattr("elves.streams.loop.ENDS_WAIT_S", 0.3)
    monkeypatch.setattr("elves.streams.loop.time.sleep", lambda _s: None)
    never = Flaky(failures=10**9)
    answers = Flaky(failures=0)
    starts = [TopicPartition("t", 0, 0), TopicPartition("u", 1, 0)]

    class Client:
        def get_watermark_offsets(
            self, tp: TopicPartition, timeout: float, cached: bool
        ) -> tuple[int, int]:
            return (never if tp.topic == "t" else answers).get_watermark_offsets(
                tp, timeout, cached
            )

    ends = loop()._ends(Client(), starts)  # type: ignore[arg-type]
    assert ends == {("t", 0): UNKNOWN_END, ("u", 1): 7}  # the other is still asked, once
    assert answers.asked == 1


class Inputs:
    """A consumer's view of its inputs: each partition's end (`high`) and read position."""

    def __init__(self, high: dict[tuple[str, int], int], read: dict[tuple[str, int], int]):
        self.high, self.read = high, read

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float, cached: bool
    ) -> tuple[int, int]:
        return 0, self.high[(tp.topic, tp.partition)]

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.high]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.read.get((tp.topic, tp.partition), -1001))
            for tp in partitions
        ]


def test_the_clocks_wait_for_what_the_catch_up_sent_to_the_loop_s_own_inputs() -> None:
    """A result read while catching up is copied to `crons`, which the loop reads after its next
    commit: the clocks wait for that too, or a cron whose run had ended looked busy."""
    results, crons = ("results", 0), ("crons", 0)
    inputs = Inputs(high={results: 5, crons: 3}, read={})
    looping = loop()
    looping._behind_from(inputs, [TopicPartition(*results, 2), TopicPartition(*crons, 3)])  # type: ignore[arg-type]
    assert looping._behind == {results: 5}  # crons had nothing to read
    assert not looping._caught_up(inputs)  # type: ignore[arg-type]
    inputs.read[results] = 5  # read to the end as of the assignment; its copy went to crons:
    inputs.high[crons] = 4
    assert not looping._caught_up(inputs)  # type: ignore[arg-type]
    looping._look_again(inputs)  # type: ignore[arg-type]  # after the next commit
    assert looping._behind == {crons: 4}  # from where crons began: nothing was read there
    assert not looping._caught_up(inputs)  # type: ignore[arg-type]
    inputs.read[crons] = 4
    assert looping._caught_up(inputs)  # type: ignore[arg-type]


def test_nothing_behind_at_the_assignment_lets_the_clocks_go_at_once() -> None:
    inputs = Inputs(high={("results", 0): 5}, read={})
    looping = loop()
    looping._behind_from(inputs, [TopicPartition("results", 0, 5)])  # type: ignore[arg-type]
    assert looping._caught_up(inputs)  # type: ignore[arg-type]
