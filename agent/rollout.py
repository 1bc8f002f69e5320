"""The agent's app rollout: it learns the desired version of every app from the `apps` log and
installs it.

A thread reads `apps` from its beginning, without a consumer group (every agent reads all of
it), and folds it (`elves.app_versions`). Once it has read what there is, each app whose latest
activation it has not handled yet is installed: downloaded from the gateway, its sha256 checked,
unpacked and switched to atomically (`install.py`). Any failure keeps the version that ran
before and is kept as the app's install error, which every heartbeat reports; activating the
version again tries again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import httpx
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from elves import app_versions
from elves.agent.install import activate, install, installed_versions, packages_dir
from elves.config import Settings
from elves.errors import DecodeError, ElvesError
from elves.kafka import consumer
from elves.schemas.codec import CODEC
from elves.schemas.events import Event

log = logging.getLogger(__name__)

POLL_S = 0.2
DOWNLOAD_TIMEOUT_S = 60.0

Fetch = Callable[[str, str], bytes]  # (app, version) -> the package's bytes


class InstallFailed(Exception):
    """A package could not be fetched; the message says why."""


class Rollout:
    def __init__(self, settings: Settings, agent_id: str, fetch: Fetch | None = None) -> None:
        self.settings = settings
        self.root = packages_dir(settings, agent_id)
        self.fetch = fetch or self._download
        self._apps: dict[str, app_versions.AppState] = {}
        self._handled: dict[str, str] = {}  # app -> the activation event it acted on
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def versions(self) -> dict[str, str]:
        """{app: version} of the installed packages that run."""
        return installed_versions(self.root)

    def errors(self) -> dict[str, str]:
        """{app: why its desired version is not the one that runs}."""
        with self._lock:
            return dict(self._errors)

    def apply(self, event: Event) -> None:
        self._apps = app_versions.fold_all([event], self._apps)

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
            return
        log.info("app %s: version %s runs now", app, version.version)
        with self._lock:
            self._errors.pop(app, None)

    def _download(self, app: str, version: str) -> bytes:
        url = f"{self.settings.base_url}/api/v1/apps/{app}/versions/{version}/package"
        try:
            response = httpx.get(url, timeout=DOWNLOAD_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise InstallFailed(f"download failed: {exc!r}") from exc
        if response.status_code != 200:
            raise InstallFailed(
                f"download failed: HTTP {response.status_code} {response.text[:200]}"
            )
        return response.content

    def run(self, stop: threading.Event) -> None:
        """Read `apps` and install, until `stop` is set."""
        topic = self.settings.topic("apps")
        c = consumer(self.settings, f"{self.settings.topic_prefix}rollout-{uuid.uuid4().hex[:8]}")
        try:
            meta = c.list_topics(topic, timeout=10).topics.get(topic)
            partitions = list(meta.partitions) if meta is not None and not meta.error else [0]
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            dirty = False
            while not stop.is_set():
                msg = c.poll(POLL_S)
                if msg is None or msg.error():
                    # Caught up (or idle): act on the newest word, not on every step of history.
                    if dirty:
                        self.reconcile()
                        dirty = False
                    continue
                try:
                    self.apply(CODEC.decode(msg.value()))
                except DecodeError as exc:
                    log.warning("undecodable message on %s: %s", topic, exc.message)
                    continue
                dirty = True
        finally:
            c.close()
