"""Every setting, declared once: its environment variable, type, default and why.

One `Settings` is built per process (`Settings.from_env()`) and passed down; nothing else reads
the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from elves.permissions import Rule, default_rule
from elves.selectors import parse_tags


def _setting(env: str, default: Any, why: str) -> Any:
    return field(default=default, metadata={"env": env, "why": why})


@dataclass(frozen=True)
class Settings:
    bootstrap: str = _setting(
        "ELVES_KAFKA", "127.0.0.1:19092", "Kafka bootstrap servers (the local broker by default)."
    )
    topic_prefix: str = _setting(
        "ELVES_TOPIC_PREFIX", "elves.", "One prefix for every topic, so stacks can share a broker."
    )
    state_dir: Path = _setting(
        "ELVES_STATE_DIR", Path("state"), "Where local data lives: Kafka logs, chDB, agent outbox."
    )
    clickhouse_dsn: str = _setting(
        "ELVES_CLICKHOUSE", "", "ClickHouse DSN; empty means embedded chDB under the state dir."
    )
    gateway_host: str = _setting("ELVES_GATEWAY_HOST", "127.0.0.1", "Where the gateway listens.")
    gateway_port: int = _setting("ELVES_GATEWAY_PORT", 8390, "Gateway port.")
    dashboard_host: str = _setting(
        "ELVES_DASHBOARD_HOST", "127.0.0.1", "Where `elves dashboard` listens (it holds a key)."
    )
    dashboard_port: int = _setting("ELVES_DASHBOARD_PORT", 8391, "`elves dashboard`'s port.")
    gateway_url: str = _setting(
        "ELVES_GATEWAY_URL", "", "Gateway URL for the CLI; empty means host and port above."
    )
    task_timeout_s: int = _setting("ELVES_TASK_TIMEOUT", 90, "ELVES' default task timeout.")
    task_grace_s: float = _setting(
        "ELVES_TASK_GRACE", 5.0, "Added to a task's timeout for its deadline: agent kill + report."
    )
    max_params_bytes: int = _setting(
        "ELVES_MAX_PARAMS", 64 * 1024, "Largest params a task may carry (JSON bytes)."
    )
    heartbeat_s: float = _setting(
        "ELVES_HEARTBEAT", 60.0, "Agent heartbeat interval (ELVES: 60 s; local setups use 1-2 s)."
    )
    missed_beats: int = _setting(
        "ELVES_MISSED_BEATS", 3, "An agent is down after this many missed heartbeats."
    )
    agent_id: str = _setting(
        "ELVES_AGENT_ID", "", "This agent's id; empty means the one kept in its state dir."
    )
    agent_tags: str = _setting(
        "ELVES_AGENT_TAGS",
        "",
        "This agent's tags, key=value,...: selectors target groups of agents by them.",
    )
    apps_dir: Path = _setting(
        "ELVES_APPS_DIR", Path("apps/samples"), "Where the agent finds installed apps."
    )
    app_store: str = _setting(
        "ELVES_APP_STORE",
        "",
        "Where the gateway keeps app packages (by sha256); empty: <state>/appstore.",
    )
    max_package_bytes: int = _setting(
        "ELVES_MAX_PACKAGE", 16 * 1024 * 1024, "Largest app package (zip) one may publish."
    )
    app_default: str = _setting(
        "ELVES_APP_DEFAULT",
        "allow",
        "allow|deny: may an app with no permission rule run on every agent; the same on all.",
    )
    agent_workers: int = _setting(
        "ELVES_AGENT_WORKERS", 4, "Tasks one agent runs at once; more wait on its topic."
    )
    agent_cron_file: str = _setting(
        "ELVES_AGENT_CRON_FILE",
        "",
        "The agent's own cron (JSON, re-read on change); empty: <state>/agent/<id>/cron.json.",
    )
    agent_keep_versions: int = _setting(
        "ELVES_AGENT_KEEP_VERSIONS",
        3,
        "Installed versions an agent keeps per app: the newest N, and the running one if older.",
    )
    agent_apps: str = _setting(
        "ELVES_AGENT_APPS",
        "",
        "Apps this agent may run, comma-separated; empty: any. Checked on every dispatch.",
    )
    center_key: str = _setting(
        "ELVES_CENTER_KEY",
        "",
        "The center's dispatch public key (PEM) agents verify with; empty: <state>/center/"
        "dispatch.pub.",
    )
    control_ttl_s: int = _setting(
        "ELVES_CONTROL_TTL",
        7 * 24 * 3600,
        "How long a signed cancel or cron change stays valid: the dispatch topics' retention.",
    )
    max_output_bytes: int = _setting(
        "ELVES_MAX_OUTPUT", 1024 * 1024, "Cap on a worker's captured stdout; the rest is dropped."
    )
    stream_output_bytes: int = _setting(
        "ELVES_STREAM_OUTPUT",
        1024 * 1024,
        "Cap on what an attempt's output (stdout and stderr) streams to the center while it "
        "runs; 0 streams none.",
    )
    key_file: str = _setting(
        "ELVES_KEY_FILE",
        "",
        "The API key clients sign with (JSON id, secret); empty: <state>/center/admin.key.",
    )
    # ClickHouse wants few large inserts: a row cost about half as much in inserts of 5,000 as
    # of 500 (bench/audit.py). The flush time still bounds how long an event waits.
    watcher_batch: int = _setting(
        "ELVES_WATCHER_BATCH", 5000, "Events per ClickHouse insert at most."
    )
    watcher_flush_s: float = _setting(
        "ELVES_WATCHER_FLUSH", 0.5, "Longest an event waits in the watcher before its insert."
    )

    def __post_init__(self) -> None:
        default_rule(self.app_default)  # a bad ELVES_APP_DEFAULT stops a process at its start

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = source.get(f.metadata["env"])
            if raw is None:
                continue
            kind: Any = type(f.default)  # every setting has a plain default: str, int, ...
            values[f.name] = kind(raw)
        values.update(overrides)
        return cls(**values)

    @property
    def tags(self) -> dict[str, str]:
        """The agent's tags, parsed; a malformed `ELVES_AGENT_TAGS` raises BadSelector."""
        return parse_tags(self.agent_tags)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def dispatch_topic(self, agent_id: str) -> str:
        return self.topic(f"dispatch.{agent_id}")

    def processor_topic(self, app: str) -> str:
        return self.topic(f"processor.{app}")

    def changelog_topic(self, table: str) -> str:
        """A streams table's changelog (Faust's name for it): the table's rows, compacted."""
        return self.topic(f"streams-{table}-changelog")

    @property
    def audit_dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{self.state_dir.resolve() / 'audit'}"

    @property
    def default_rule(self) -> Rule:
        """The permission of an app that has no rule; a bad `ELVES_APP_DEFAULT` raises."""
        return default_rule(self.app_default)

    @property
    def app_store_dir(self) -> Path:
        return Path(self.app_store) if self.app_store else self.state_dir / "appstore"

    @property
    def center_dir(self) -> Path:
        """The center's own secrets: the master key and the admin key file (mode 0700)."""
        return self.state_dir / "center"

    @property
    def admin_key_path(self) -> Path:
        return self.center_dir / "admin.key"

    @property
    def key_path(self) -> Path:
        return Path(self.key_file) if self.key_file else self.admin_key_path

    @property
    def dispatch_key_path(self) -> Path:
        """The center's private key that signs every dispatch (the streams make it once)."""
        return self.center_dir / "dispatch.key"

    @property
    def center_key_path(self) -> Path:
        """The center's public key, as agents and the watcher verify dispatches with it."""
        return Path(self.center_key) if self.center_key else self.center_dir / "dispatch.pub"

    @property
    def allowed_apps(self) -> frozenset[str] | None:
        """The apps this agent may run (`ELVES_AGENT_APPS`); None: any."""
        names = frozenset(a.strip() for a in self.agent_apps.split(",") if a.strip())
        return names or None

    @property
    def base_url(self) -> str:
        return self.gateway_url or f"http://{self.gateway_host}:{self.gateway_port}"


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, why) of every setting, for the README and `elves config`."""
    return [(f.metadata["env"], str(f.default), f.metadata["why"]) for f in fields(Settings)]
