"""The agent's app rollout: it learns the desired version of every app from the `apps` log and
installs it.

A thread reads `apps` from its beginning, without a consumer group (every agent reads all of
it), and folds it (`elves.app_versions`). Once it has read what there is, each app whose latest
activation it has not handled yet is installed: downloaded from the gateway, its sha256 checked,
unpacked and switched to atomically (`install.py`). Any failure keeps the version that ran
before and is kept as the app's install error, which every heartbeat reports; it is tried
again after 5 s, then twice as long each time up to 5 minutes, and at once when this agent is
accepted (until then the gateway gives it nothing: `gateway_fetch` signs with its own
enrolled key).

The same log carries each app's permission rule (`AppPermissionSet`): `permits` is the agent's
own check that an app may run here, after the gateway's and the streams'.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elves import app_versions
from elves.agent.install import activate, install, installed_versions, packages_dir, prune
from elves.client import agent_client
from elves.config import Settings
from elves.errors import DecodeError, ElvesError
from elves.kafka import QUIET_FETCH_WAIT_MS, consumer
from elves.permissions import allowed
from elves.schemas.codec import CODEC
from elves.schemas.events import AgentAccepted, AgentTagsSet, Event

log = logging.getLogger(__name__)

POLL_S = 0.2
DOWNLOAD_TIMEOUT_S = 60.0
RETRY_FIRST_S = 5.0  # after a failed install; doubled each time it fails again
RETRY_MAX_S = 300.0
# How long a permission check waits, at the agent's start, for the rules to be read.
CATCH_UP_WAIT_S = 10.0

Fetch = Callable[[str, str], bytes]  # (app, version) -> the package's bytes


class InstallFailed(Exception):
    """A package could not be fetched; the message says why."""


def gateway_fetch(settings: Settings, agent_id: str, key: Ed25519PrivateKey) -> Fetch:
    """Packages from the gateway, each download signed with the agent's own enrolled key (the
    gateway serves an accepted agent its packages without an API key)."""

    def fetch(app: str, version: str) -> bytes:
        path = f"/api/v1/apps/{app}/versions/{version}/package"
        try:
            with agent_client(settings, agent_id, key, DOWNLOAD_TIMEOUT_S) as gateway:
                response = gateway.get(path)
        except httpx.HTTPError as exc:
            raise InstallFailed(f"download failed: {exc!r}") from exc
        if response.status_code != 200:
            raise InstallFailed(
                f"download failed: HTTP {response.status_code} {response.text[:200]}"
            )
        return response.content

    return fetch


class Rollout:
    def __init__(
        self,
        settings: Settings,
        agent_id: str,
        fetch: Fetch,
        catch_up_wait_s: float = CATCH_UP_WAIT_S,
    ) -> None:
        self.settings = settings
        self.root = packages_dir(settings, agent_id)
        self.fetch = fetch
        self._retry_at: dict[str, float] = {}  # app -> when to try its install again
        self._retry_delay: dict[str, float] = {}
        self._apps: dict[str, app_versions.AppState] = {}
        self._handled: dict[str, str] = {}  # app -> the activation event it acted on
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self.agent_id = agent_id
        self._default = settings.default_rule  # for an app with no rule (ELVES_APP_DEFAULT)
        # The operator's tags for this agent (`AgentTagsSet`): laid over its own, as the center
        # does, so that the agent judges a rule's selectors on the tags the center matched.
        self._admin_tags: dict[str, str] = {}
        self._caught_up = threading.Event()  # set once what `apps` held at start was read
        self._wait_until = time.monotonic() + catch_up_wait_s

    def versions(self) -> dict[str, str]:
        """{app: version} of the installed packages that run."""
        return installed_versions(self.root)

    def errors(self) -> dict[str, str]:
        """{app: why its desired version is not the one that runs}."""
        with self._lock:
            return dict(self._errors)

    def apply(self, event: Event) -> None:
        self._apps = app_versions.fold_all([event], self._apps)

    def permits(self, app: str, agent_id: str, tags: Mapping[str, str]) -> bool:
        """May `app` run on this agent, which has these (config) tags? Its rule from `apps`, or
        the default with none. In its first seconds it waits for the log to be read (the rule
        that forbids an app may be on it); after that, or without Kafka, it judges by what it
        has read."""
        self._caught_up.wait(max(0.0, self._wait_until - time.monotonic()))
        rule = app_versions.permission(self._apps.get(app), self._default)
        return allowed(rule, agent_id, {**tags, **self._admin_tags})

    def reconcile(self) -> None:
        """Install every app whose latest activation was not acted on yet."""
        for app, state in sorted(self._apps.items()):
            if state.active is None or state.activation_id == self._handled.get(app):
                continue
            self._handled[app] = state.activation_id or ""
            self._install(app, state.versions[state.active])

    def _install(self, app: str, version: app_versions.Version) -> None:
        try:
            if not (self.root / app / version.version).is_dir():
                data = self.fetch(app, version.version)
                install(
                    self.root,
                    app,
                    version.version,
                    version.sha256,
                    data,
                    self.settings.max_package_bytes,
                )
            activate(self.root, app, version.version)
        except (ElvesError, InstallFailed, OSError) as exc:
            message = exc.message if isinstance(exc, ElvesError) else str(exc)
            log.warning("app %s %s not installed, kept the one before: %s", app, version, message)
            with self._lock:
                self._errors[app] = f"{version.version}: {message}"
                delay = min(RETRY_MAX_S, self._retry_delay.get(app, RETRY_FIRST_S / 2) * 2)
                self._retry_delay[app] = delay
                self._retry_at[app] = time.monotonic() + delay
            return
        log.info("app %s: version %s runs now", app, version.version)
        with self._lock:
            self._errors.pop(app, None)
            self._retry_at.pop(app, None)
            self._retry_delay.pop(app, None)
        try:
            removed = prune(self.root, app, self.settings.agent_keep_versions)
        except OSError as exc:  # a full disk must not undo an install that worked
            log.warning("app %s: old versions not removed: %s", app, exc)
        else:
            if removed:
                log.info("app %s: removed old versions %s", app, ", ".join(removed))

    def retry_due(self) -> bool:
        """Make the failed installs whose time has come due again; True if there are any."""
        now = time.monotonic()
        with self._lock:
            due = [app for app, at in self._retry_at.items() if at <= now]
            for app in due:
                del self._retry_at[app]
                self._handled.pop(app, None)
        return bool(due)

    def run(self, stop: threading.Event) -> None:
        """Read `apps` (and this agent's admin tags on `enrolments`) and install, until `stop`
        is set."""
        c = consumer(
            self.settings,
            f"{self.settings.topic_prefix}rollout-{uuid.uuid4().hex[:8]}",
            # Every agent has one: at 500 ms, an idle fleet's rollouts were most of its asking.
            **{"fetch.wait.max.ms": QUIET_FETCH_WAIT_MS},
        )
        try:
            c.assign(self._partitions(c))
            dirty = False
            while not stop.is_set():
                msg = c.poll(POLL_S)
                if msg is None or msg.error():
                    # Caught up (or idle): act on the newest word, not on every step of history.
                    self._caught_up.set()
                    if self.retry_due() or dirty:
                        self.reconcile()
                        dirty = False
                    continue
                if msg.topic() == self.settings.topic("enrolments"):
                    self._enrolment(msg.value())
                    continue
                try:
                    self.apply(CODEC.decode(msg.value()))
                except DecodeError as exc:
                    log.warning("undecodable message on %s: %s", msg.topic(), exc.message)
                    continue
                dirty = True
        finally:
            c.close()

    def _partitions(self, c: Consumer) -> list[TopicPartition]:
        """`apps` whole, and `enrolments` whole if the center has it (a rule's selector may
        match a tag the operator gave this agent, which only that topic tells it)."""
        parts = []
        for name in ("apps", "enrolments"):
            topic = self.settings.topic(name)
            meta = c.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error:
                partitions = [0] if name == "apps" else []
            else:
                partitions = list(meta.partitions)
            parts += [TopicPartition(topic, p, _beginning(c, topic, p)) for p in partitions]
        return parts

    def _enrolment(self, data: bytes | None) -> None:
        """This agent's admin tags; and its acceptance, which makes every failed install due
        at once (a download before it was refused)."""
        if CODEC.name_of(data) not in (AgentTagsSet.__name__, AgentAccepted.__name__):
            return  # registrations and other decisions: not this view's business
        try:
            event = CODEC.decode(data)
        except DecodeError:
            return
        if isinstance(event, AgentTagsSet) and event.agent_id == self.agent_id:
            self._admin_tags = dict(event.tags)
        elif isinstance(event, AgentAccepted) and event.agent_id == self.agent_id:
            # The gateway may read the acceptance a moment after this agent does: should that
            # try be refused too, the next one comes after the first delay again, not a long one.
            with self._lock:
                self._retry_at = dict.fromkeys(self._retry_at, 0.0)
                self._retry_delay.clear()


def _beginning(c: Consumer, topic: str, partition: int) -> int:
    """Where a partition begins now, as a number: librdkafka fetches nothing for half a second
    while it looks OFFSET_BEGINNING up itself. A topic not made yet begins where it will."""
    try:
        low, _ = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    except KafkaException:
        return OFFSET_BEGINNING
    return int(low)
