"""How many events a second one Python process can fold on this machine: Faust against a plain
confluent-kafka loop.

The streams worker's folds all have one shape: read an event, update a table row, write a
derived event. This bench runs that shape alone, with no rules in it, so its numbers are the
ceiling of any fold built on it here:

    faust-fold     a Faust agent (the streams worker's settings and consumer): per input, one
                   table write (changelog) and one send
    faust-forward  the same agent without the table: one send per input
    plain-fold     confluent-kafka consume -> dict row -> produce row and event, one thread
    plain-forward  confluent-kafka consume -> produce

N inputs are written first; then the reader starts. The clock runs from its first output to its
last (their record timestamps), so the reader's own start is not counted. Prints events/s and
the reader's CPU per event over the same stretch.

    .venv/bin/python bench/faust_ceiling.py [-n 20000] [--only faust-fold,plain-fold]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from elves.config import Settings
from elves.kafka import consumer, producer
from elves.local import env_for, free_port

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
KINDS = ("faust-fold", "faust-forward", "plain-fold", "plain-forward")
EVENT = b"x" * 200  # about the size of an Avro TaskSubmitted


def cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the readers, each run as its own process ---------------------------------------------------


def faust_reader(bootstrap: str, source: str, sink: str, with_table: bool) -> None:
    import aiokafka
    import faust

    from elves.streams import app as streams_app

    if not os.environ.get("CEILING_STOCK"):  # CEILING_STOCK=1: aiokafka's own settings
        aiokafka.AIOKafkaConsumer = streams_app._Consumer  # the streams worker's consumer
    app = faust.App(
        f"ceiling-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{bootstrap}",
        datadir=tempfile.mkdtemp(prefix="ceiling-faust-"),
        **streams_app.FAUST_OPTIONS,
    )
    inputs = app.topic(source, partitions=PARTITIONS, key_type=bytes, value_type=bytes)
    outputs = app.topic(sink, partitions=PARTITIONS, key_type=bytes, value_type=bytes)
    as_json: Any = faust.Schema(key_serializer="json", value_serializer="json")
    table = app.Table("rows", partitions=PARTITIONS, schema=as_json)

    @app.agent(inputs)
    async def fold(stream: faust.StreamT[bytes]) -> Any:
        async for event in stream.events():
            key = event.key
            if with_table:
                row = table.get(key.decode()) or {"seen": 0}
                table[key.decode()] = {"seen": row["seen"] + 1}
            await outputs.send(key=key, value=event.value)
            yield None

    from faust.worker import Worker

    sys.argv = [sys.argv[0], "worker"]  # as `elves streams` runs it: Faust reads the command line
    Worker(app, loglevel="info", quiet=True).execute_from_commandline()


def plain_reader(bootstrap: str, source: str, sink: str, with_table: bool) -> None:
    settings = Settings(bootstrap=bootstrap)
    reader = consumer(settings, f"ceiling-{uuid.uuid4().hex[:6]}", **{"fetch.wait.max.ms": 10})
    writer = producer(settings, **{"linger.ms": 1})
    reader.subscribe([source])
    rows: dict[bytes, int] = {}
    changelog = f"{sink}-rows"
    while True:
        for msg in reader.consume(500, 0.1):
            if msg.error():
                continue
            key = msg.key() or b""
            if with_table:
                rows[key] = rows.get(key, 0) + 1
                writer.produce(changelog, key=key, value=b'{"seen": %d}' % rows[key])
            writer.produce(sink, key=key, value=msg.value())
        writer.poll(0)


# --- the driver -----------------------------------------------------------------------------------


def outputs_between(
    settings: Settings, sink: str, n: int, pid: int, timeout: float
) -> tuple[float, float, float]:
    """(first output's timestamp, n-th output's timestamp, the reader's CPU in between): the
    steady state, without the reader's start."""
    reader = consumer(settings, f"ceiling-count-{uuid.uuid4().hex[:6]}")
    reader.assign([TopicPartition(sink, p, 0) for p in range(PARTITIONS)])
    seen, first, newest = 0, 0, 0
    cpu_at_first = 0.0
    deadline = time.monotonic() + timeout
    while seen < n and time.monotonic() < deadline:
        for msg in reader.consume(1000, 0.05):
            if msg.error():
                continue
            if not seen:
                cpu_at_first = cpu_s(pid)
                first = msg.timestamp()[1]
            seen += 1
            newest = max(newest, msg.timestamp()[1])
    cpu = cpu_s(pid) - cpu_at_first
    reader.close()
    if seen < n:
        raise TimeoutError(f"{seen} of {n} outputs in {timeout:.0f} s")
    return first / 1000, newest / 1000, cpu


def run(kind: str, settings: Settings, n: int) -> None:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    tag = uuid.uuid4().hex[:6]
    source, sink = f"ceiling.{tag}.in", f"ceiling.{tag}.out"
    topics = [NewTopic(t, PARTITIONS, 1) for t in (source, sink, f"{sink}-rows")]
    for future in admin.create_topics(topics).values():
        future.result(30)
    writer = producer(settings, **{"linger.ms": 5})
    for i in range(n):
        while True:
            try:
                writer.produce(source, key=b"k%05d" % (i % 1000), value=EVENT)
                break
            except BufferError:  # the local queue is full: let it drain
                writer.poll(0.1)
    writer.flush(60)
    end = consumer(settings, "unused")
    end.assign([TopicPartition(sink, p, OFFSET_END) for p in range(PARTITIONS)])
    end.close()
    child = subprocess.Popen(
        [sys.executable, __file__, "--reader", kind, settings.bootstrap, source, sink],
        env=env_for(settings),
    )
    try:
        first, last, cpu = outputs_between(settings, sink, n, child.pid, 600)
    finally:
        child.terminate()
        child.wait(30)
    wall = last - first
    print(
        f"{kind:<14} {n} events, first to last output {wall:5.1f} s = {n / wall:6.0f} events/s; "
        f"reader CPU {cpu / n * 1e6:4.0f} us/event"
    )
    sys.stdout.flush()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--reader":
        kind, bootstrap, source, sink = sys.argv[2:6]
        reader = faust_reader if kind.startswith("faust") else plain_reader
        reader(bootstrap, source, sink, kind.endswith("fold"))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument(
        "--only", default=",".join(KINDS), help="comma-separated: " + ", ".join(KINDS)
    )
    parser.add_argument("--kafka", default=f"127.0.0.1:{os.environ.get('BENCH_KAFKA_PORT', 19493)}")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="faust-ceiling-"))
    settings = Settings(
        bootstrap=args.kafka,
        topic_prefix="ceiling.",
        state_dir=state,
        gateway_port=free_port(),
    )
    kafka = ["bash", str(ROOT / "infra/kafka.sh")]
    subprocess.run([*kafka, "start"], check=True, env=env_for(settings))
    try:
        for kind in args.only.split(","):
            run(kind, settings, args.n)
    finally:
        subprocess.run([*kafka, "stop"], env=env_for(settings))
        subprocess.run(["rm", "-rf", str(state)])


if __name__ == "__main__":
    main()
