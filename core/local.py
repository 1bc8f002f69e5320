"""A local platform as child processes: used by `elves up`, the integration tests and bench/.

Each part (streams, gateway with the watcher, agents) runs as `python -m elves.cli <part>` with
its settings passed through the environment and its output in <state>/logs/<part>.log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from elves.admin_key import ensure_admin_key
from elves.client import client
from elves.config import Settings
from elves.schemas.events import AddCron, new_id, random_id
from elves.topics import ensure_topics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_broker_port() -> int:
    """A free port for a broker of one's own: its KRaft controller listens on port + 1 too."""
    while True:
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port


def every_second_cron(now_ms: int) -> AddCron:
    """The benchmarks' cron: fires every second for an agent that does not exist, so each fire
    is real (a `CronFired` and a `TaskSubmitted`, rejected 414.2) and no app runs."""
    return AddCron(
        event_id=new_id(),
        occurred_at=now_ms,
        cron_id=random_id(),
        agent_id="nobody",
        app="noop",
        func="noop",
        params="{}",
        timeout_s=10,
        rule="* * * * * *",
        overlap="parallel",  # every decision a fire, whatever the previous run
    )


def bench_settings(name: str, root: Path, **overrides: Any) -> Settings:
    """Settings for a benchmark's own stack: its broker port (BENCH_KAFKA_PORT), fresh topics
    and state, the sample apps."""
    values: dict[str, Any] = {
        "bootstrap": f"127.0.0.1:{os.environ.get('BENCH_KAFKA_PORT', '19492')}",
        "topic_prefix": f"{name}{uuid.uuid4().hex[:6]}.",
        "state_dir": Path(tempfile.mkdtemp(prefix=f"elves-{name}-")),
        "gateway_port": free_port(),
        "apps_dir": root / "apps" / "samples",
    }
    return Settings(**{**values, **overrides})


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ELVES_KAFKA": settings.bootstrap,
            "ELVES_TOPIC_PREFIX": settings.topic_prefix,
            "ELVES_STATE_DIR": str(settings.state_dir),
            "ELVES_GATEWAY_PORT": str(settings.gateway_port),
            "ELVES_DASHBOARD_PORT": str(settings.dashboard_port),
            "ELVES_HEARTBEAT": str(settings.heartbeat_s),
            "ELVES_MISSED_BEATS": str(settings.missed_beats),
            "ELVES_TASK_GRACE": str(settings.task_grace_s),
            "ELVES_APPS_DIR": str(settings.apps_dir),
            "ELVES_WATCHER_FLUSH": str(settings.watcher_flush_s),
            "ELVES_KEY_FILE": str(settings.key_path.resolve()),
            # The center's dispatch key: agents with a state dir of their own verify with it.
            "ELVES_CENTER_KEY": str(settings.center_key_path.resolve()),
        }
    )
    env.update(extra)
    return env


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `probe` until it returns something truthy; the only way to wait on another process."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (httpx.HTTPError, KeyError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what} (last error: {last!r})")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """Signal, wait, and kill if it would not go."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@dataclass
class Stack:
    settings: Settings
    client: httpx.Client  # a signing one (`elves.client.client`)
    processes: list[Process] = field(default_factory=list)
    admin_key: Path | None = None  # the key file the stack's admin key is in, once started
    admin_key_minted: bool = False
    # Agents started here that the stack accepts (as an operator would) once they registered.
    to_accept: set[str] = field(default_factory=set)

    def spawn(self, name: str, *args: str, **env: str) -> Process:
        logs = self.settings.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "elves.cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env_for(self.settings, **env),
                start_new_session=True,
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def spawn_agent(self, agent_id: str, accept: bool = True, **env: str) -> Process:
        """Start an agent; unless `accept` is False, `wait_agent` accepts it first."""
        if accept:
            self.to_accept.add(agent_id)
        return self.spawn(f"agent-{agent_id}", "agent", ELVES_AGENT_ID=agent_id, **env)

    def enrolment(self, agent_id: str) -> str | None:
        """pending, accepted, rejected (or unregistered); None for an agent not known."""
        response = self.client.get(f"/api/v1/agents/{agent_id}")
        return str(response.json()["enrolment"]) if response.status_code == 200 else None

    def registered(self, agent_id: str) -> bool:
        """The gateway has the agent's registration (its key): there is something to accept.
        Its enrolment alone does not say so: an agent rejected before its registration was read
        is `rejected` with no key yet."""
        response = self.client.get(f"/api/v1/agents/{agent_id}")
        return response.status_code == 200 and bool(response.json().get("key_id"))

    def accept(self, agent_id: str, timeout: float = 30) -> None:
        """Accept an agent through the REST API once it has registered: the operator's path."""
        wait_for(
            f"agent {agent_id} registered",
            lambda: self.alive() and self.registered(agent_id),
            timeout,
        )
        response = self.client.post(f"/api/v1/agents/{agent_id}/accept")
        if response.status_code != 200 or response.json()["enrolment"] != "accepted":
            raise RuntimeError(f"accepting {agent_id}: {response.status_code} {response.text}")
        self.to_accept.discard(agent_id)

    def agent_status(self, agent_id: str) -> str | None:
        response = self.client.get(f"/api/v1/agents/{agent_id}")
        return str(response.json()["status"]) if response.status_code == 200 else None

    def alive(self) -> bool:
        """True while every part runs; raises with the log of the first that exited."""
        for process in self.processes:
            if process.popen.poll() is not None and process.popen.returncode not in (0, -15):
                raise RuntimeError(f"{process.name} exited: {process.tail()}")
        return True

    def wait_agent(self, agent_id: str, status: str = "up", timeout: float = 30) -> None:
        if agent_id in self.to_accept:
            self.accept(agent_id, timeout)
        wait_for(
            f"agent {agent_id} {status}",
            lambda: self.alive() and self.agent_status(agent_id) == status,
            timeout,
        )

    def exec(
        self,
        agent: str,
        app: str,
        func: str,
        params: dict[str, Any] | None = None,
        timeout: int = 20,
    ) -> httpx.Response:
        body = {
            "agent": agent,
            "app": app,
            "func": func,
            "params": params or {},
            "timeout": timeout,
        }
        return self.client.post("/api/v1/tasks/instant", json=body, timeout=timeout + 30)

    def audit(self, sql: str) -> list[list[Any]]:
        response = self.client.post("/api/v1/audit", json={"sql": sql})
        assert response.status_code == 200, response.text
        return list(response.json()["rows"])

    def start(self, agent_ids: list[str], timeout: float = 90) -> None:
        """Streams, gateway and agents; returns once the gateway answers and the agents are
        accepted (through the REST API) and up. First the admin key, as `elves up` makes it: the
        client signs with it."""
        self.admin_key, self.admin_key_minted = ensure_admin_key(self.settings)
        self.spawn("streams", "streams")
        self.spawn("gateway", "gateway")
        for agent_id in agent_ids:
            self.spawn_agent(agent_id)

        def healthy() -> bool:
            return self.alive() and self.client.get("/health").status_code == 200

        try:
            wait_for("the gateway", healthy, timeout)
            for agent_id in agent_ids:
                self.wait_agent(agent_id, "up", timeout)
        except TimeoutError as exc:
            logs = "\n".join(f"--- {p.name}:\n{p.tail()}" for p in self.processes)
            raise TimeoutError(f"{exc}\n{logs}") from exc

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.client.close()


KAFKA_SCRIPT = Path(__file__).resolve().parent.parent / "infra" / "kafka.sh"


def kafka(command: str, settings: Settings, check: bool = True) -> None:
    """`infra/kafka.sh COMMAND` for the broker these settings name."""
    subprocess.run(["bash", str(KAFKA_SCRIPT), command], check=check, env=env_for(settings))


def kafka_running(settings: Settings) -> bool:
    """Does the broker these settings name run (`infra/kafka.sh status`)?"""
    status = subprocess.run(
        ["bash", str(KAFKA_SCRIPT), "status"], env=env_for(settings), capture_output=True
    )
    return status.returncode == 0


def _exit_on_term(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def term_as_exit() -> Iterator[None]:
    """Within it, SIGTERM raises SystemExit, as Ctrl-C raises KeyboardInterrupt: a benchmark
    stopped with `kill` still runs its `finally` and stops what it started. Its processes run in
    sessions of their own and outlive it otherwise (a killed run's agents and streams worker
    once kept running into the next run, and talked to its broker on the same port)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a handler
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def bench_state(settings: Settings) -> Iterator[None]:
    """A benchmark's state dir (`bench_settings` made it: the broker's log, the audit, every
    process's log), removed once the benchmark ran through; kept when it failed, or when
    `BENCH_KEEP` is set, and then its place is printed. Every run used to leave its tens of MB
    in the temp dir."""
    kept = f"bench: its state and logs are kept in {settings.state_dir}\n"
    try:
        yield
    except BaseException:
        sys.stderr.write(kept)
        raise
    if os.environ.get("BENCH_KEEP"):
        sys.stderr.write(kept)
    else:
        shutil.rmtree(settings.state_dir, ignore_errors=True)


@contextmanager
def own_stack(
    settings: Settings, agent_ids: list[str], workers: int | None = None
) -> Iterator[Stack]:
    """A broker and a whole stack of one's own (for benchmarks), stopped at the end, also when
    the benchmark is interrupted or killed (SIGTERM); its state dir goes too (`bench_state`)."""
    if workers is not None:
        os.environ["ELVES_AGENT_WORKERS"] = str(workers)  # the agents inherit it
    with term_as_exit(), bench_state(settings):
        kafka("start", settings)
        try:
            ensure_topics(settings)
            stack = Stack(settings, client(settings, timeout=60))
            try:
                stack.start(agent_ids)
                yield stack
            finally:
                stack.close()
        finally:
            kafka("stop", settings, check=False)
