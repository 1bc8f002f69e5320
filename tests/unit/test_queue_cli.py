"""`elves queue wait`'s progress line, without a gateway."""

from __future__ import annotations

from elves.queue_cli import progress


def test_progress_counts_tasks_by_status_in_lifecycle_order() -> None:
    queue = {
        "status": "running",
        "tasks": [
            {"status": "succeeded"},
            {"status": "pending"},
            {"status": "running"},
            {"status": "succeeded"},
            {"status": "skipped"},
        ],
    }
    assert progress(queue) == "running: 1 pending, 1 running, 2 succeeded, 1 skipped"


def test_progress_of_a_queue_without_tasks_is_its_status() -> None:
    assert progress({"status": "open", "tasks": []}) == "open"
