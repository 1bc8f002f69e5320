"""Instant tasks through the real stack: latency sequential and under concurrency.

Starts its own broker (infra/kafka.sh), streams worker, gateway+watcher and agents, runs the
noop Python app, prints p50/p95/p99 latency, tasks/s and where the time goes, then stops it all.

    .venv/bin/python bench/instant.py [--sequential 300] [--concurrent 2000] [--clients 32]
                                      [--agents 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx

from elves.client import async_client
from elves.config import Settings
from elves.local import bench_settings, own_stack

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("gateway_to_dispatch", "dispatch_to_agent", "app_run", "result_to_reply")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(title: str, latencies: list[float], timings: list[dict[str, int]], wall: float) -> None:
    print(
        f"\n{title}: {len(latencies)} tasks in {wall:.2f} s = {len(latencies) / wall:.0f} tasks/s"
    )
    print(
        f"  latency ms: p50 {pct(latencies, 0.5):.1f}  p95 {pct(latencies, 0.95):.1f}  "
        f"p99 {pct(latencies, 0.99):.1f}  max {max(latencies):.1f}"
    )
    if timings:
        parts = "  ".join(f"{p} {statistics.median(t[p] for t in timings):.0f}" for p in PARTS)
        print(f"  median ms by stage: {parts}")


async def one(client: httpx.AsyncClient, agent: str) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    reply = await client.post(
        "/api/v1/tasks/instant",
        json={"agent": agent, "app": "noop", "func": "noop", "timeout": 30},
    )
    elapsed = (time.perf_counter() - started) * 1000
    data = reply.json()
    if data.get("worker_flag") != 1:
        raise RuntimeError(f"task failed: {data}")
    return elapsed, data["timings_ms"]


async def sequential(settings: Settings, agent: str, n: int) -> None:
    async with async_client(settings, timeout=60) as client:
        for _ in range(20):  # warm up connections, fork server, Faust
            await one(client, agent)
        lat, tim = [], []
        start = time.perf_counter()
        for _ in range(n):
            ms, t = await one(client, agent)
            lat.append(ms)
            tim.append(t)
        report("sequential", lat, tim, time.perf_counter() - start)


async def concurrent(settings: Settings, agents: list[str], n: int, clients: int) -> None:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with async_client(settings, timeout=120, limits=limits) as client:
        lat: list[float] = []
        tim: list[dict[str, int]] = []
        counter = iter(range(n))

        async def worker(i: int) -> None:
            for k in counter:
                ms, t = await one(client, agents[(i + k) % len(agents)])
                lat.append(ms)
                tim.append(t)

        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        report(
            f"concurrent ({clients} clients, {len(agents)} agents)",
            lat,
            tim,
            time.perf_counter() - start,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--workers", type=int, default=8, help="tasks at once per agent")
    parser.add_argument(
        "--watcher-flush", type=float, default=0.5, help="seconds between audit inserts"
    )
    args = parser.parse_args()

    settings = bench_settings("bench", ROOT, heartbeat_s=2.0, watcher_flush_s=args.watcher_flush)
    agents = [f"bench-agent-{i + 1}" for i in range(args.agents)]
    with own_stack(settings, agents, args.workers):
        logs = settings.state_dir / "logs"
        print(f"stack up: {args.agents} agents x {args.workers} workers, logs in {logs}")
        asyncio.run(sequential(settings, agents[0], args.sequential))
        asyncio.run(concurrent(settings, agents, args.concurrent, args.clients))


if __name__ == "__main__":
    main()
