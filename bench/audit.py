"""Audit store throughput into embedded chDB: rows/s per batch size, replay cost, task lookup.

python bench/audit.py [total_rows]
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid

from elves.api.audit import AuditRow, AuditStore

T0 = 1_700_000_000_000
PAYLOAD = '{"worker_message": "' + "x" * 300 + '"}'


def rows(n: int) -> list[AuditRow]:
    out = []
    for i in range(n):
        task = f"task-{i // 6}"  # about six events per task, as a task's lifecycle has
        out.append(
            AuditRow(
                str(uuid.uuid4()),
                "TaskStarted",
                "elves.tasks",
                i % 4,
                i,
                T0 + i,
                "agent-1",
                task,
                "demo",
                PAYLOAD,
            )  # fmt: skip
        )
    return out


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        store = AuditStore(f"chdb://{tmp}/audit")
        data = rows(total)
        for batch in (50, 500, 5000):
            part, data = data[: total // 3], data[total // 3 :]
            start = time.perf_counter()
            for i in range(0, len(part), batch):
                store.insert(part[i : i + batch])
            took = time.perf_counter() - start
            print(f"batch {batch:>5}: {len(part) / took:>9.0f} rows/s ({len(part)} rows)")
        stored = store.count()
        _, sample = store.query("SELECT event_id, task_id FROM events LIMIT 500")
        replay = [AuditRow(r[0], "TaskStarted", "elves.tasks", 0, 0, T0, "a", r[1], "d", "{}")
                  for r in sample]  # fmt: skip
        start = time.perf_counter()
        assert store.insert(replay) == 0
        took_ms = 1000 * (time.perf_counter() - start)
        print(f"replay of 500 stored ids at {stored} rows: {took_ms:.1f} ms")
        start = time.perf_counter()
        n = 100
        for i in range(n):
            store.task_events(f"task-{i * 97}")
        each_ms = 1000 * (time.perf_counter() - start) / n
        print(f"task_events at {stored} rows: {each_ms:.2f} ms each")
        start = time.perf_counter()
        store.count()
        print(f"count() at {stored} rows: {1000 * (time.perf_counter() - start):.1f} ms")
        store.close()


if __name__ == "__main__":
    main()
