"""The task lifecycle's latency under a steady trickle of submissions.

Starts its own broker (infra/kafka.sh) and streams worker (`python -m elves.cli streams`), makes
a fake agent "ghost" up with one heartbeat, then produces N TaskSubmitted commands at a fixed
rate and reads each dispatch back from dispatch.ghost. Per task it splits the latency at the
decision timestamp (`TaskDispatched.occurred_at`, set by the worker):

    in->decide   produce (this process) -> the worker's decision
    decide->out  the worker's decision -> this process receives the dispatch

and prints p50/p95/p99/max for both halves and the total, then stops it all.

    .venv/bin/python bench/trickle.py [-n 500] [--rate 100] [--runs 1]
        [--kafka 127.0.0.1:19592] [--fetch-wait-ms 1] [--child-env K=V ...]

`--child-env` passes extra environment to the streams worker only (for A/B experiments).
The ghost never runs anything, so every task stays open for the whole run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elves.config import Settings
from elves.kafka import consumer, producer
from elves.local import Stack, env_for, free_port, wait_for
from elves.schemas.codec import CODEC
from elves.schemas.events import AgentAccepted, Heartbeat, TaskSubmitted, new_id
from elves.signing import CenterKey, registration
from elves.topics import ensure_dispatch_topic, ensure_topics

ROOT = Path(__file__).resolve().parent.parent
AGENT = "ghost"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(name: str, values: list[float]) -> str:
    return (
        f"  {name:<12} p50 {pct(values, 0.5):7.1f}  p95 {pct(values, 0.95):7.1f}  "
        f"p99 {pct(values, 0.99):7.1f}  max {max(values):7.1f}  ms"
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def log_append_time(s: Settings, topics: list[str]) -> None:
    """The broker stamps these topics' records on append: it splits each half at the broker."""
    admin = AdminClient({"bootstrap.servers": s.bootstrap})
    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(
                    "message.timestamp.type",
                    "LogAppendTime",
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        for name in topics
    ]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(30)


def cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process and its threads so far (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(
    s: Settings,
    n: int,
    rate: float,
    fetch_wait_ms: int,
    run: int,
    timeline: bool,
    pids: dict[str, int],
) -> None:
    prod = producer(s)
    center = CenterKey(s.center_key_path)  # the streams made it at their start
    cons = consumer(s, f"trickle-{uuid.uuid4().hex}", **{"fetch.wait.max.ms": fetch_wait_ms})
    # Only what comes from now on: the dispatches, and the commands for their append times.
    cmd_parts = [TopicPartition(s.topic("commands"), p, -1) for p in range(4)]
    cons.assign([TopicPartition(s.dispatch_topic(AGENT), 0, -1), *cmd_parts])
    appended: dict[str, float] = {}
    # Let the assignment settle (first fetch sets the position at the end of the log).
    deadline = time.time() + 2
    while time.time() < deadline:
        cons.poll(0.05)
    sent: dict[str, float] = {}
    done = threading.Event()

    def produce() -> None:
        t0 = time.time()
        for i in range(n):
            delay = t0 + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            tid = uuid.uuid4().hex
            sent[tid] = time.time()
            event = TaskSubmitted(new_id(), now_ms(), tid, AGENT, "noop", "noop", "{}", 600)
            prod.produce(s.topic("commands"), key=tid.encode(), value=CODEC.encode(event))
            prod.poll(0)
        prod.flush(10)
        done.set()

    writer = threading.Thread(target=produce, daemon=True)
    cpu0 = {name: cpu_s(pid) for name, pid in pids.items()}
    load0 = os.getloadavg()[0]
    t_start = time.time()
    writer.start()
    seq: list[tuple[float, float, float]] = []  # (sent offset s, in->decide, decide->out)
    in_decide: list[float] = []
    decide_out: list[float] = []
    total: list[float] = []
    legs: list[tuple[float, float, float, float]] = []
    limit = time.time() + n / rate + 30
    while len(total) < n and time.time() < limit:
        msg = cons.poll(0.05)
        if msg is None or msg.error():
            continue
        got = time.time()
        key = msg.key().decode()
        if key not in sent:
            continue
        if msg.topic() == s.topic("commands"):
            appended[key] = msg.timestamp()[1] / 1000
            continue
        decided = center.open(msg.value()).event.occurred_at / 1000  # the signed dispatch
        out_appended = msg.timestamp()[1] / 1000
        in_decide.append((decided - sent[key]) * 1000)
        decide_out.append((got - decided) * 1000)
        total.append((got - sent[key]) * 1000)
        if key in appended:
            legs.append(
                (
                    (appended[key] - sent[key]) * 1000,
                    (decided - appended[key]) * 1000,
                    (out_appended - decided) * 1000,
                    (got - out_appended) * 1000,
                )
            )
        seq.append((sent[key] - t_start, in_decide[-1], decide_out[-1]))
    wall = time.time() - t_start
    writer.join(5)
    cons.close()
    cpu = "  ".join(f"{k} {(cpu_s(p) - cpu0[k]) / wall * 100:.0f}%" for k, p in pids.items())
    print(
        f"run {run}: {len(total)}/{n} dispatches at {rate:g}/s in {wall:.1f} s;"
        f" CPU {cpu}; load {load0:.1f}->{os.getloadavg()[0]:.1f}"
    )
    if total:
        print(line("in->decide", in_decide))
        print(line("decide->out", decide_out))
        print(line("total", total))
        names = ("produce->log", "log->decide", "decide->log", "log->receive")
        print(f"  split at the broker's append time ({len(legs)} with both stamps):")
        for i, name in enumerate(names):
            print("  " + line(name, [x[i] for x in legs]))
        if timeline:
            for sec in range(int(n / rate) + 1):
                part = [x for x in seq if sec <= x[0] < sec + 1]
                if part:
                    a, b = [x[1] for x in part], [x[2] for x in part]
                    print(
                        f"    t={sec:>3}s n={len(part):4d} in->decide p50 {pct(a, 0.5):6.1f} "
                        f"max {max(a):6.1f} | decide->out p50 {pct(b, 0.5):6.1f} max {max(b):6.1f}"
                    )
    sys.stdout.flush()


def restart_streams(stack: Stack, s: Settings, extra: dict[str, str]) -> int:
    """Stop the worker, start a new one and wait until it dispatches again (one probe task)."""
    stack.processes.pop().stop()
    process = stack.spawn("streams", "streams", **extra)
    prod = producer(s)
    probe = consumer(s, f"trickle-probe-{uuid.uuid4().hex}")
    probe.assign([TopicPartition(s.dispatch_topic(AGENT), 0, -1)])
    tid = uuid.uuid4().hex
    event = TaskSubmitted(new_id(), now_ms(), tid, AGENT, "noop", "noop", "{}", 600)
    prod.produce(s.topic("commands"), key=tid.encode(), value=CODEC.encode(event))
    prod.flush(10)
    wait_for(
        "the restarted worker",
        lambda: stack.alive() and (m := probe.poll(0.2)) is not None and not m.error(),
        90,
    )
    probe.close()
    time.sleep(1)
    print(f"restarted streams: pid {process.popen.pid}")
    return process.popen.pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--runs", type=int, default=1, help="measurements on the same worker")
    parser.add_argument("--kafka", default="127.0.0.1:19592")
    parser.add_argument("--fetch-wait-ms", type=int, default=1, help="the measuring consumer's")
    parser.add_argument(
        "--restart-streams", action="store_true", help="a fresh worker (warm broker) each run"
    )
    parser.add_argument("--timeline", action="store_true", help="p50/max per second sent")
    parser.add_argument("--child-env", action="append", default=[], metavar="K=V")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="faust-trickle-"))
    s = Settings(
        bootstrap=args.kafka,
        topic_prefix=f"ft{uuid.uuid4().hex[:6]}.",
        state_dir=state,
        gateway_port=free_port(),
        heartbeat_s=600.0,
    )
    subprocess.run(["bash", str(ROOT / "infra/kafka.sh"), "start"], check=True, env=env_for(s))
    stack = Stack(s, None)  # type: ignore[arg-type]  # no gateway here
    try:
        ensure_topics(s)
        ensure_dispatch_topic(s, AGENT)
        log_append_time(s, [s.topic("commands"), s.dispatch_topic(AGENT)])
        extra = dict(kv.split("=", 1) for kv in args.child_env)
        stack.spawn("streams", "streams", **extra)
        prod = producer(s)
        # The ghost registers and is accepted, as an agent and an operator would.
        registered = registration(Ed25519PrivateKey.generate(), AGENT, "host", new_id(), now_ms())
        accepted = AgentAccepted(new_id(), now_ms(), AGENT, registered.public_key)
        for enrolment in (registered, accepted):
            prod.produce(s.topic("enrolments"), key=AGENT.encode(), value=CODEC.encode(enrolment))
        beat = Heartbeat(new_id(), now_ms(), AGENT, "host", 600.0, now_ms(), {})
        prod.produce(s.topic("heartbeats"), key=AGENT.encode(), value=CODEC.encode(beat))
        prod.flush(10)
        up = consumer(s, f"trickle-up-{uuid.uuid4().hex}")
        up.assign([TopicPartition(s.topic("agents"), 0, 0)])
        wait_for(
            "the ghost agent up",
            lambda: stack.alive() and (m := up.poll(0.2)) is not None and not m.error(),
            90,
        )
        up.close()
        pids = {"streams": stack.processes[0].popen.pid}
        broker = s.state_dir / "kafka" / "broker.pid"
        if broker.exists():
            pids["broker"] = int(broker.read_text())
        print(f"pids {pids}; child env {extra or '-'}")
        for run in range(1, args.runs + 1):
            if run > 1 and args.restart_streams:
                pids["streams"] = restart_streams(stack, s, extra)
            run_once(s, args.n, args.rate, args.fetch_wait_ms, run, args.timeline, pids)
    finally:
        for process in reversed(stack.processes):
            process.stop()
        subprocess.run(["bash", str(ROOT / "infra/kafka.sh"), "stop"], env=env_for(s))
        if os.environ.get("TRICKLE_KEEP") is None:
            subprocess.run(["rm", "-rf", str(state)])


if __name__ == "__main__":
    main()
