"""`elves up`: the whole platform on one machine, for a first look and for demos.

Kafka (the project's own script), the streams worker, the gateway with the watcher and local
agents, each a child process with its log under <state>/logs; an instant task to show it works;
everything stopped in reverse order on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from elves.config import Settings
from elves.topics import ensure_topics

ROOT = Path(__file__).resolve().parent.parent  # the source tree (editable install)
KAFKA_SCRIPT = ROOT / "infra" / "kafka.sh"
# Lively local defaults: a heartbeat every 2 s, so a stopped agent is down within 6 s.
LOCAL_HEARTBEAT_S = "2"


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ELVES_KAFKA": settings.bootstrap,
            "ELVES_TOPIC_PREFIX": settings.topic_prefix,
            "ELVES_STATE_DIR": str(settings.state_dir.resolve()),
            "ELVES_HEARTBEAT": env.get("ELVES_HEARTBEAT", LOCAL_HEARTBEAT_S),
        }
    )
    env.update(extra)
    return env


def kafka(command: str, settings: Settings) -> None:
    subprocess.run(["bash", str(KAFKA_SCRIPT), command], check=True, env=_env(settings))


def spawn(name: str, args: list[str], settings: Settings, **env: str) -> Child:
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "elves.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(settings, **env),
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
    return Child(name, process, log)


def wait_until(check: str, probe: object, timeout: float, children: list[Child]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited early; see {child.log}")
        try:
            if probe():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {check}")


def stop(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    for child in reversed(children):
        try:
            child.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.process.kill()
        _say(f"  stopped {child.name}")


def up(settings: Settings, agents: int = 1) -> int:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    _say(f"kafka     starting on {settings.bootstrap} (data in {settings.state_dir}/kafka)")
    kafka("start", settings)
    ensure_topics(settings)
    children: list[Child] = []
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        children.append(spawn("streams", ["streams"], settings))
        children.append(spawn("gateway", ["gateway"], settings))
        host = socket.gethostname()
        agent_ids = [f"{host}-{i + 1}" for i in range(agents)]
        for agent_id in agent_ids:
            children.append(spawn(f"agent-{agent_id}", ["agent"], settings, ELVES_AGENT_ID=agent_id))
        client = httpx.Client(base_url=settings.base_url, timeout=120)
        wait_until(
            "the gateway", lambda: client.get("/health").status_code == 200, 90, children
        )

        def agents_up() -> bool:
            listed = client.get("/api/v1/agents").json()["agents"]
            return {a["agent_id"] for a in listed if a["status"] == "up"} >= set(agent_ids)

        wait_until("the agents", agents_up, 60, children)
        for child in children:
            _say(f"{child.name:<9} pid {child.process.pid}, log {child.log}")
        _say(f"gateway   {settings.base_url}  (OpenAPI at {settings.base_url}/openapi.json)")
        _say(f"audit     {settings.audit_dsn}")
        _say("")
        _say(f"$ elves exec {agent_ids[0]} apptest helloword -p my=toryzen")
        reply = client.post(
            "/api/v1/tasks/instant",
            json={
                "agent": agent_ids[0],
                "app": "apptest",
                "func": "helloword",
                "params": {"my": "toryzen"},
                "timeout": 30,
            },
        ).json()
        _say(
            f"task {reply.get('task_id')}: {reply.get('status')}, "
            f"worker_flag {reply.get('worker_flag')}, "
            f"worker_message {reply.get('worker_message')!r}, "
            f"{reply.get('worker_costtime')} ms"
        )
        _say("")
        _say("Elves is up. Try `elves agents`, `elves task ID`, `elves audit \"SELECT ...\"`.")
        _say("Ctrl-C stops everything.")
        while not stopping:
            for child in children:
                if child.process.poll() is not None:
                    _say(f"{child.name} exited with {child.process.returncode}; see {child.log}")
                    stopping = True
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        _say("stopping ...")
        stop(children)
        kafka("stop", settings)
        _say("  stopped kafka")
    return 0
