"""Heartbeats: every interval, who this agent is, its tags, which apps it has and how loaded it is.

Heartbeats are produced directly, never spooled: a stale one says nothing true. Their producer
gives up on a message after one interval, so an outage does not end with a burst of old beats.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from elves.config import Settings
from elves.kafka import producer as make_producer
from elves.schemas.codec import CODEC
from elves.schemas.events import Heartbeat, new_id

log = logging.getLogger(__name__)

DEV_VERSION = "dev"  # an app folder without a manifest: a developer's working copy


def installed_apps(apps_dir: Path) -> dict[str, str]:
    """{app: version} of the app folders, the version from manifest.json or "dev"."""
    apps: dict[str, str] = {}
    try:
        entries = sorted(apps_dir.iterdir())
    except FileNotFoundError:
        return apps
    for entry in entries:
        if not entry.is_dir() or entry.name.startswith((".", "_")):
            continue
        try:
            manifest = json.loads((entry / "manifest.json").read_text())
            version = str(manifest["version"]) if isinstance(manifest, dict) else DEV_VERSION
        except (OSError, ValueError, KeyError):
            version = DEV_VERSION
        apps[entry.name] = version
    return apps


def load1() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


class Heartbeater:
    """Beats at once, then every `settings.heartbeat_s`, until `stop` is set."""

    def __init__(
        self,
        settings: Settings,
        agent_id: str,
        producer: Producer | None = None,
        packages: Callable[[], tuple[Mapping[str, str], Mapping[str, str]]] | None = None,
    ) -> None:
        self.settings = settings
        # (installed package versions, install errors), from the rollout; packages win over
        # the folders of apps_dir, as they do when a task runs.
        self.packages = packages
        self.agent_id = agent_id
        self.started_at = int(time.time() * 1000)
        self.tags = settings.tags  # checked at the agent's start, so this parses
        timeout_ms = max(1000, int(settings.heartbeat_s * 1000))
        # No idempotence: a lost or repeated beat is harmless, and an idempotent producer must
        # first get a producer id, which a broker that is still loading can delay for seconds.
        self.producer = producer or make_producer(
            settings,
            "agent-heartbeat",
            **{"message.timeout.ms": timeout_ms, "enable.idempotence": False, "acks": 1},
        )

    def beat(self) -> Heartbeat:
        versions, errors = self.packages() if self.packages is not None else ({}, {})
        event = Heartbeat(
            event_id=new_id(),
            occurred_at=int(time.time() * 1000),
            agent_id=self.agent_id,
            hostname=socket.gethostname(),
            interval_s=self.settings.heartbeat_s,
            started_at=self.started_at,
            apps={**installed_apps(self.settings.apps_dir), **versions},
            load1=load1(),
            tags=self.tags,
            install_errors=dict(errors),
        )
        try:
            self.producer.produce(
                self.settings.topic("heartbeats"),
                key=self.agent_id.encode(),
                value=CODEC.encode(event),
                on_delivery=_report,
            )
        except (BufferError, KafkaException) as exc:
            log.warning("heartbeat not sent: %s", exc)
        self.producer.poll(0)
        return event

    def run(self, stop: threading.Event) -> None:
        while True:
            self.beat()
            # Serve delivery reports while waiting for the next beat or the stop.
            end = time.monotonic() + self.settings.heartbeat_s
            while (left := end - time.monotonic()) > 0:
                if stop.wait(min(left, 0.5)):
                    self.producer.flush(1.0)
                    return
                self.producer.poll(0)


def _report(err: object, _msg: object) -> None:
    if err is not None:
        log.warning("heartbeat lost: %s", err)
