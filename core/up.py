"""`elves up`: the whole platform on one machine, for a first look and for demos.

Kafka (the project's own script), the streams worker, the gateway with the watcher, local agents
and the dashboard as child processes (see `elves.local`); one instant task to show that it
works; all of it stopped in reverse order on Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import signal
import socket
import sys
import time

from elves.client import client
from elves.config import Settings
from elves.local import Stack, kafka, kafka_running
from elves.topics import ensure_topics

# Lively local defaults: a heartbeat every 2 s, so a stopped agent is down within 6 s.
LOCAL_HEARTBEAT_S = 2.0


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def taken(host: str, port: int) -> bool:
    """Does something listen on host:port already?"""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def busy_ports(settings: Settings) -> list[str]:
    """The gateway's and the dashboard's addresses that something already listens on."""
    wanted = [
        ("the gateway", settings.gateway_host, settings.gateway_port),
        ("the dashboard", settings.dashboard_host, settings.dashboard_port),
    ]
    return [f"{what} ({host}:{port})" for what, host, port in wanted if taken(host, port)]


def up(settings: Settings, agents: int = 1) -> int:
    if settings.heartbeat_s == Settings.heartbeat_s:
        settings = dataclasses.replace(settings, heartbeat_s=LOCAL_HEARTBEAT_S)
    settings = dataclasses.replace(settings, state_dir=settings.state_dir.resolve())
    busy = busy_ports(settings)
    if busy:
        # Another `elves up` most likely: a second one started its processes beside the first's,
        # saw them fail, and on its way out stopped the broker the first one was using.
        _say(
            f"something already listens where {' and '.join(busy)} would: is Elves up already?"
            " Stop it first, or give this one other ports (ELVES_GATEWAY_PORT,"
            " ELVES_DASHBOARD_PORT and ELVES_KAFKA)."
        )
        return 1
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    # A broker that runs already (started by hand with infra/kafka.sh) is used, and left running.
    ours = not kafka_running(settings)
    _say(f"kafka      starting on {settings.bootstrap} (data in {settings.state_dir}/kafka)")
    kafka("start", settings)
    ensure_topics(settings)
    stack = Stack(settings, client(settings, timeout=120))
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        host = socket.gethostname()
        agent_ids = [f"{host}-{i + 1}" for i in range(agents)]
        stack.start(agent_ids)
        stack.spawn("dashboard", "dashboard")
        for process in stack.processes:
            _say(f"{process.name:<10} pid {process.popen.pid}, log {process.log}")
        for agent_id in agent_ids:  # Stack.start accepted them, as an operator would
            _say(f"accepted   agent {agent_id} (elves agent accept; a new agent waits pending)")
        # Where the secret is, never the secret: it is in that file (0600) and nowhere else.
        made = "made now" if stack.admin_key_minted else "kept"
        _say(f"admin key  {stack.admin_key} ({made}; clients sign with it: ELVES_KEY_FILE)")
        _say(f"gateway    {settings.base_url}  (OpenAPI: {settings.base_url}/openapi.json)")
        _say(f"audit      {settings.audit_dsn}")
        dashboard = f"http://{settings.dashboard_host}:{settings.dashboard_port}/"
        _say(f"dashboard  {dashboard}  (read-only, through the gateway with the admin key)")
        _say("")
        _say(f"$ elves exec {agent_ids[0]} apptest helloword -p my=toryzen")
        reply = stack.exec(agent_ids[0], "apptest", "helloword", {"my": "toryzen"}).json()
        _say(
            f"task {reply.get('task_id')}: {reply.get('status')}, "
            f"worker_flag {reply.get('worker_flag')}, "
            f"worker_message {reply.get('worker_message')!r}, {reply.get('worker_costtime')} ms"
        )
        _say("")
        _say('Elves is up. Try: elves agents | elves task ID | elves audit "SELECT ..."')
        _say("Ctrl-C stops everything.")
        while not stopping:
            for process in stack.processes:
                if process.popen.poll() is not None:
                    _say(f"{process.name} exited ({process.popen.returncode}); see {process.log}")
                    stopping = True
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        _say("stopping ...")
        for process in reversed(stack.processes):
            process.stop()
            _say(f"  stopped {process.name}")
        stack.client.close()
        if ours:
            kafka("stop", settings)
            _say("  stopped kafka")
        else:
            _say("  kafka left running: it was running before this started")
    return 0
