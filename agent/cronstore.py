"""The agent cron's durable state, in the outbox's database so that one commit holds both what
the agent remembers and what it must tell the center.

- `cron_pushed`: the newest `AgentCronSet` per cron id, as received (a deleted cron's too, so
  that an older one delivered again does not bring it back). The center's crons run from here
  while Kafka is unreachable and after a restart.
- `cron_marks`: per active cron, the newest scheduled time handled (run, missed or skipped) and
  the schedule (rule and zone) it counts for. After a restart, the times since then follow the
  cron's misfire policy; a new or changed schedule starts from now.
- `cron_runs`: one row per fire, keyed by its task id, claimed in the same commit as the mark
  moves past its time. A time is claimed once, so it never runs twice, restarts or not. The row
  holds the report to send if the run never ends here (the agent was killed while it ran):
  the next start sends it, so no fire is lost silently.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable

from elves.agent.outbox import Outbox, Row
from elves.errors import DecodeError
from elves.schemas.codec import CODEC
from elves.schemas.events import AgentCronRan, AgentCronSet

log = logging.getLogger(__name__)

# Ended runs are forgotten after a day: a per-second cron claims 86,400 a day, and past its
# run the marks alone keep a time from firing again.
RUNS_KEEP_MS = 24 * 3600 * 1000

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cron_pushed (
        cron_id TEXT PRIMARY KEY,
        occurred_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        event BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS cron_marks (
        cron_id TEXT PRIMARY KEY,
        schedule TEXT NOT NULL,
        handled_until INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS cron_runs (
        task_id TEXT PRIMARY KEY,
        cron_id TEXT NOT NULL,
        scheduled_at INTEGER NOT NULL,
        claimed_at INTEGER NOT NULL,
        ended_at INTEGER,
        topic TEXT NOT NULL,
        lost BLOB NOT NULL
    )""",
)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A fire to claim: its task id and the report to send should it never end here."""

    task_id: str
    cron_id: str
    scheduled_at: int
    topic: str
    lost: AgentCronRan


class CronStore:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        with outbox.transaction() as txn:
            for statement in _SCHEMA:
                txn.execute(statement)
        self.prune()

    def prune(self) -> int:
        """Forget runs that ended more than RUNS_KEEP_MS ago; how many were forgotten."""
        with self.outbox.transaction() as txn:
            cur = txn.execute(
                "DELETE FROM cron_runs WHERE ended_at IS NOT NULL AND ended_at < ?",
                (_now_ms() - RUNS_KEEP_MS,),
            )
            return cur.rowcount

    # --- the center's crons -------------------------------------------------------------------

    def push(self, event: AgentCronSet) -> bool:
        """Keep `event` if it is the newest for its cron; False for an older one (ignored)."""
        with self.outbox.transaction() as txn:
            cur = txn.execute(
                "INSERT INTO cron_pushed (cron_id, occurred_at, status, event) VALUES (?,?,?,?)"
                " ON CONFLICT (cron_id) DO UPDATE SET occurred_at = excluded.occurred_at,"
                " status = excluded.status, event = excluded.event"
                " WHERE excluded.occurred_at >= cron_pushed.occurred_at",
                (event.cron_id, event.occurred_at, event.status, CODEC.encode(event)),
            )
            return cur.rowcount > 0

    def pushed(self) -> list[AgentCronSet]:
        events = []
        for cron_id, data in self.outbox.query("SELECT cron_id, event FROM cron_pushed"):
            try:
                event = CODEC.decode(data)
            except DecodeError as exc:  # written by this agent, so only a newer one's rows
                log.warning("cron %s: stored definition unreadable: %s", cron_id, exc.message)
                continue
            if isinstance(event, AgentCronSet):
                events.append(event)
        return events

    # --- marks --------------------------------------------------------------------------------

    def marks(self) -> dict[str, tuple[str, int]]:
        """cron id -> (schedule, handled_until)."""
        rows = self.outbox.query("SELECT cron_id, schedule, handled_until FROM cron_marks")
        return {str(c): (str(s), int(h)) for c, s, h in rows}

    def set_marks(self, marks: dict[str, tuple[str, int]], drop: Iterable[str] = ()) -> None:
        with self.outbox.transaction() as txn:
            for cron_id in drop:
                txn.execute("DELETE FROM cron_marks WHERE cron_id = ?", (cron_id,))
            for cron_id, (schedule, handled_until) in marks.items():
                txn.execute(
                    "INSERT OR REPLACE INTO cron_marks (cron_id, schedule, handled_until)"
                    " VALUES (?,?,?)",
                    (cron_id, schedule, handled_until),
                )

    # --- fires --------------------------------------------------------------------------------

    def decide(
        self, cron_id: str, handled_until: int, claims: list[Claim], rows: list[Row]
    ) -> set[str]:
        """One commit: claim `claims`, send `rows`, move the mark; the task ids newly claimed."""
        claimed: set[str] = set()
        with self.outbox.transaction() as txn:
            for claim in claims:
                cur = txn.execute(
                    "INSERT OR IGNORE INTO cron_runs"
                    " (task_id, cron_id, scheduled_at, claimed_at, topic, lost)"
                    " VALUES (?,?,?,?,?,?)",
                    (
                        claim.task_id,
                        claim.cron_id,
                        claim.scheduled_at,
                        _now_ms(),
                        claim.topic,
                        CODEC.encode(claim.lost),
                    ),
                )
                if cur.rowcount:
                    claimed.add(claim.task_id)
            for row in rows:
                txn.put(*row)
            txn.execute(
                "UPDATE cron_marks SET handled_until = MAX(handled_until, ?) WHERE cron_id = ?",
                (handled_until, cron_id),
            )
        return claimed

    def finish(self, task_id: str, report: Row) -> None:
        """A fire ended (or will never run): its report goes out, in the same commit."""
        with self.outbox.transaction() as txn:
            txn.put(*report)
            txn.execute("UPDATE cron_runs SET ended_at = ? WHERE task_id = ?", (_now_ms(), task_id))

    def recover(self) -> int:
        """Report the fires a previous run of this agent claimed but never ended."""
        rows = self.outbox.query(
            "SELECT task_id, topic, lost FROM cron_runs WHERE ended_at IS NULL ORDER BY claimed_at"
        )
        for task_id, topic, data in rows:
            lost = CODEC.decode(data)
            if not isinstance(lost, AgentCronRan):
                continue
            report = dataclasses.replace(lost, occurred_at=max(lost.occurred_at, _now_ms()))
            self.finish(task_id, (topic, task_id.encode(), CODEC.encode(report)))
            log.warning("cron %s: fire %s never ended here; reported", lost.cron_id, task_id)
        return len(rows)


def _now_ms() -> int:
    return int(time.time() * 1000)
