"""What a task prints, cut into parts to send while it runs: the rules, without a clock or Kafka.

The runner hands every chunk it reads from the worker's pipes to `add`, with the time; the
agent sends each `Part` it gets back as a `TaskOutput`. Parts go out at most once each `WAIT_S`
(a stream with `PART_BYTES` waiting goes at once): output that comes after a quiet spell goes
out as it comes, and what comes sooner waits for the spell's end (`due` says when: the runner
wakes then even if the worker prints nothing more). So a task that prints a line a second is
read a line a second, with no wait, and a chatty one costs two messages a second, or one per
32 KB. The rest goes at the end (`finish`).

The worker's result block (`<ElvesWFlag>`...`</ElvesWResult>`, which the SDK writes last, in one
write) is the result, not output: stdout from its last `<ElvesWFlag>` on is held back, and left
out at the end. A task that prints nothing else, as most short tasks, sends no output at all. (A
worker that prints that tag before more output has the rest held back until it ends.)

At most `max_bytes` are sent an attempt; past that, bytes are counted, not kept, and the last part
says how many were dropped.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, replace

PART_BYTES = 32 * 1024  # a stream's waiting output that goes out at once
WAIT_S = 0.5  # parts go out at most this often (size aside)
STREAMS = ("stdout", "stderr")
_FLAG_OPEN = b"<ElvesWFlag>"
_RESULT_CLOSE = b"</ElvesWResult>"


@dataclass(frozen=True)
class Part:
    seq: int  # from 0, in the order printed (both streams together)
    stream: str  # "stdout" or "stderr"
    data: str
    dropped_bytes: int = 0  # bytes past the cap so far (set on the last part)


class OutputParts:
    """One attempt's output, in arrival order, waiting to go out as `Part`s."""

    def __init__(
        self, max_bytes: int, *, part_bytes: int = PART_BYTES, wait_s: float = WAIT_S
    ) -> None:
        self.max_bytes = max_bytes
        self.part_bytes = part_bytes
        self.wait_s = wait_s
        self.sent_bytes = 0  # bytes taken for parts (counted before decoding)
        self.dropped_bytes = 0
        self._waiting: list[tuple[str, bytearray]] = []  # (stream, bytes): runs of one stream
        self._held = bytearray()  # stdout from a result tag on: sent only if more comes
        self._since: float | None = None  # when the oldest waiting byte came
        self._sent_at = float("-inf")  # when parts last went out
        self._seq = 0
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in STREAMS}

    def add(self, stream: str, chunk: bytes, now: float) -> list[Part]:
        """Take a chunk the worker printed; return the parts it makes ready."""
        room = self.max_bytes - self.sent_bytes - self._waiting_bytes()
        if room < len(chunk):
            self.dropped_bytes += len(chunk) - max(room, 0)
            chunk = chunk[: max(room, 0)]
        if not chunk:
            return []
        if stream == "stdout" and self._held:
            chunk = bytes(self._held) + chunk  # more came after the tag: it was not the end
            self._held.clear()
        if self._waiting and self._waiting[-1][0] == stream:
            self._waiting[-1][1].extend(chunk)
        else:
            self._waiting.append((stream, bytearray(chunk)))
        if self._since is None:
            self._since = now
        if len(self._waiting[-1][1]) >= self.part_bytes or now >= self.due():
            return self.flush(now)
        return []

    def due(self) -> float:
        """When what waits must go out though nothing more comes (infinity if nothing waits):
        the runner sleeps no longer than this."""
        if self._since is None:
            return float("inf")
        return max(self._since, self._sent_at + self.wait_s)

    def flush(self, now: float) -> list[Part]:
        """What waits, as parts (one per run of a stream), but a result block."""
        if self._waiting and self._waiting[-1][0] == "stdout":
            run = self._waiting[-1][1]
            tag = run.rfind(_FLAG_OPEN)
            if tag >= 0:
                self._held = run[tag:]
                del run[tag:]
        parts = self._parts(final=False)
        if parts:
            self._sent_at = now
        return parts

    def finish(self) -> list[Part]:
        """The rest, once the worker's pipes are closed: without the result block, and with the
        count of dropped bytes on the last part."""
        if self._held:
            self._waiting.append(("stdout", self._held))
        for i in range(len(self._waiting) - 1, -1, -1):
            stream, data = self._waiting[i]
            if stream == "stdout":
                self._waiting[i] = (stream, bytearray(without_result(bytes(data))))
                break
        parts = self._parts(final=True)
        if self.dropped_bytes:
            last = parts.pop() if parts else Part(self._next_seq(), "stdout", "")
            parts.append(replace(last, dropped_bytes=self.dropped_bytes))
        return parts

    def _parts(self, *, final: bool) -> list[Part]:
        """Everything waiting as parts; nothing waits after."""
        parts = [self._part(stream, bytes(data), final) for stream, data in self._waiting if data]
        self._waiting.clear()
        self._since = None
        return [p for p in parts if p.data]

    def _part(self, stream: str, data: bytes, final: bool) -> Part:
        self.sent_bytes += len(data)
        text = self._decoders[stream].decode(data, final)  # a character split across chunks waits
        if not text:
            return Part(-1, stream, "")
        return Part(self._next_seq(), stream, text)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

    def _waiting_bytes(self) -> int:
        return len(self._held) + sum(len(data) for _, data in self._waiting)


def without_result(stdout: bytes) -> bytes:
    """`stdout` without its last result block (from the last `<ElvesWFlag>` through the
    `</ElvesWResult>` after it, or to the end if it has none)."""
    start = stdout.rfind(_FLAG_OPEN)
    if start < 0:
        return stdout
    end = stdout.find(_RESULT_CLOSE, start)
    return stdout[:start] + (stdout[end + len(_RESULT_CLOSE) :] if end >= 0 else b"")


class OutputStream:
    """An attempt's `OutputParts` and where its parts go (the agent's outbox): what the runner
    is given, so that it need not know about events."""

    def __init__(self, parts: OutputParts, send: Callable[[list[Part]], None]) -> None:
        self.parts = parts
        self.send = send
        self.sent = 0  # parts handed to `send`: the count the attempt's result reports

    def add(self, stream: str, chunk: bytes, now: float) -> None:
        self._send(self.parts.add(stream, chunk, now))

    def due(self) -> float:
        return self.parts.due()

    def flush(self, now: float) -> None:
        self._send(self.parts.flush(now))

    def finish(self) -> None:
        self._send(self.parts.finish())

    def _send(self, parts: list[Part]) -> None:
        if parts:
            self.send(parts)
            self.sent += len(parts)
