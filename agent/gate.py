"""What an agent checks before it acts on a message from its dispatch topic, and what it writes
when it refuses one.

It acts only on what verifies with the center's public key (`ELVES_CENTER_KEY`), is meant for it
and has not expired (`open`), and has not been seen before (`delivery`); the daemon adds whether
the app is allowed on it. Anything else is refused: not acted on, and reported as a
`DispatchRefused` on `security` through the outbox (`refusal`), durable before the message's
offset is committed, and so in the audit.

Replays: the sha256 of the signed claims of every message the agent acted on is kept (table
`seen`, in the outbox's database, in the same commit as a task's claim) until the claims expire;
after that the expiry check refuses them anyway. The same bytes at the same offset are Kafka
delivering again after a crash (ignored); at another offset they are a replay (416.5). The
`(task_id, attempt)` claim still drops a dispatch the center decided twice (other bytes).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Literal

from confluent_kafka import Message

from elves.agent.outbox import Outbox, Row, Transaction
from elves.config import Settings
from elves.errors import (
    DispatchExpired,
    DispatchRefusal,
    DispatchReplayed,
    DispatchWrongAgent,
)
from elves.schemas.codec import CODEC
from elves.schemas.events import DispatchRefused, TaskDispatched, derived_id
from elves.signing import CenterKey, Opened

PRUNE_EVERY = 1000  # remembered messages between two prunes of the expired ones
_SEEN = (
    "CREATE TABLE IF NOT EXISTS seen ("
    " digest BLOB PRIMARY KEY, at TEXT NOT NULL, expires_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS seen_expiry ON seen (expires_at)",
)


def where(msg: Message) -> str:
    """`topic:partition:offset`: a message's place, the same on a redelivery."""
    return f"{msg.topic()}:{msg.partition()}:{msg.offset()}"


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


class Gate:
    def __init__(self, settings: Settings, agent_id: str, outbox: Outbox) -> None:
        self.agent_id = agent_id
        self.outbox = outbox
        self.center = CenterKey(settings.center_key_path)
        self.security_topic = settings.topic("security")
        self._since_prune = 0
        with outbox.transaction() as txn:
            for statement in _SEEN:
                txn.execute(statement)

    # --- checks -------------------------------------------------------------------------------

    def open(self, data: bytes | None, now: int) -> Opened:
        """The verified message if it is for this agent and not expired; else a refusal."""
        opened = self.center.open(data)
        claims = opened.claims
        if claims.agent_id != self.agent_id:
            raise DispatchWrongAgent(
                f"for agent {claims.agent_id!r}, not this one",
                task_id=claims.subject,
                key_id=opened.key_id,
            )
        if now > claims.expires_at:
            raise DispatchExpired(
                f"expired at {_iso(claims.expires_at)} (issued at {_iso(claims.issued_at)}),"
                f" read at {_iso(now)}",
                task_id=claims.subject,
                key_id=opened.key_id,
            )
        return opened

    def delivery(self, opened: Opened, at: str) -> Literal["new", "again"]:
        """ "again" for Kafka's redelivery of a message acted on; a replay raises 416.5."""
        rows = self.outbox.query("SELECT at FROM seen WHERE digest = ?", (opened.digest,))
        if not rows:
            return "new"
        if rows[0][0] == at:
            return "again"
        raise DispatchReplayed(
            f"the same signed message was read before at {rows[0][0]}",
            task_id=opened.claims.subject,
            key_id=opened.key_id,
        )

    # --- memory -------------------------------------------------------------------------------

    def remember(self, opened: Opened, at: str) -> None:
        """The message was acted on: the same bytes again elsewhere are a replay."""
        with self.outbox.transaction() as txn:
            self._insert(txn, opened, at)

    def claim(self, opened: Opened, at: str, *rows: Row, ended: bool = False) -> bool:
        """Remember the dispatch and claim its attempt, with `rows` for the outbox, in one
        commit (`ended`: the attempt's end is among them); False if the attempt was claimed
        before (the center sent it twice: ignored, as before signing), and then `rows` are not
        written."""
        dispatch = opened.event
        assert isinstance(dispatch, TaskDispatched)
        with self.outbox.transaction() as txn:
            self._insert(txn, opened, at)
            if not txn.claim(
                dispatch.task_id,
                dispatch.attempt,
                dispatch_id=dispatch.event_id,
                app=dispatch.app,
                func=dispatch.func,
                ended=ended,
            ):
                return False
            for row in rows:
                txn.put(*row)
            return True

    def _insert(self, txn: Transaction, opened: Opened, at: str) -> None:
        txn.execute(
            "INSERT OR IGNORE INTO seen (digest, at, expires_at) VALUES (?,?,?)",
            (opened.digest, at, opened.claims.expires_at),
        )
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            # By this agent's clock, the one its expiry check reads: what is gone is refused.
            now = int(time.time() * 1000)
            txn.execute("DELETE FROM seen WHERE expires_at < ?", (now,))

    # --- refusals -----------------------------------------------------------------------------

    def refusal(self, exc: DispatchRefusal, msg: Message, now: int) -> Row:
        """The `DispatchRefused` row for the outbox. Its id derives from the message's place and
        its time (the record's timestamp), so a refusal repeated after a crash is the same event
        in the audit."""
        task_id = exc.details.get("task_id")
        key_id = exc.details.get("key_id")
        _kind, written_at = msg.timestamp()
        event = DispatchRefused(
            event_id=derived_id(where(msg), "refused", at=written_at if written_at > 0 else None),
            occurred_at=now,
            agent_id=self.agent_id,
            code=exc.code,
            reason=exc.message,
            task_id=str(task_id) if task_id else None,
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key_id=str(key_id) if key_id else None,
        )
        return self.security_topic, self.agent_id.encode(), CODEC.encode(event)
