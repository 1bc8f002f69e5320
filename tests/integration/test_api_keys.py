"""API keys on the real broker: signatures, replays, scopes by id, revocation, and no secret
anywhere it should not be. One stack for the module, so its logs and audit are its own."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from elves.client import KeyFile, client, read_key_file, write_key_file
from elves.kafka import consumer
from elves.local import Stack, wait_for
from elves.request_signing import NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from elves.topics import ensure_topics

from .conftest import stack_settings
from .test_cli import elves as cli

WEB, DB = "ak-web-1", "ak-db-1"
SECRETS: list[str] = []  # every secret the module saw: none may show up in logs or the audit


@pytest.fixture(scope="module")
def keystack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = stack_settings(kafka_bootstrap, "ak", tmp_path_factory.mktemp("keystack"))
    ensure_topics(settings)
    stack = Stack(settings, client(settings, timeout=30))
    try:
        stack.start([])
        stack.spawn_agent(WEB, ELVES_AGENT_TAGS="role=web")
        stack.spawn_agent(DB, ELVES_AGENT_TAGS="role=db")
        stack.wait_agent(WEB)
        stack.wait_agent(DB)
        SECRETS.append(read_key_file(settings.admin_key_path).secret)
        yield stack
    finally:
        stack.close()


def new_key(stack: Stack, apps: list[str], agents: list[str], ops: list[str]) -> KeyFile:
    body = {"name": "test", "apps": apps, "agents": agents, "operations": ops}
    reply = stack.client.post("/api/v1/keys", json=body)
    assert reply.status_code == 201, reply.text
    SECRETS.append(reply.json()["secret"])
    return KeyFile(reply.json()["key_id"], reply.json()["secret"])


def send(
    stack: Stack,
    key: KeyFile,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A request signed by hand (or tampered with through `headers`), on an unsigned client."""
    content = httpx.Request(method, "http://x", json=body).content if body is not None else b""
    signed = sign(key.key_id, key.secret, method, path, content, time.time())
    with httpx.Client(base_url=stack.settings.base_url, timeout=60) as raw:
        return raw.request(
            method,
            path,
            content=content,
            headers={**signed, "content-type": "application/json", **(headers or {})},
        )


def as_key(stack: Stack, key: KeyFile, tmp_path: Path) -> httpx.Client:
    """The repo's own signing client, with another key file (ELVES_KEY_FILE)."""
    path = tmp_path / f"{key.key_id}.key"
    write_key_file(path, key.key_id, key.secret)
    return client(dataclasses.replace(stack.settings, key_file=str(path)), timeout=60)


def code(reply: httpx.Response) -> str:
    return str(reply.json()["error"]["code"])


def run(c: httpx.Client, app: str, agent: str | None = None, **extra: Any) -> httpx.Response:
    func = {"apptest": "helloword", "hostfacts": "facts"}[app]
    target = {"agent": agent} if agent else {}
    body = {**target, "app": app, "func": func, "params": {"my": "k"}, "timeout": 20, **extra}
    return c.post("/api/v1/tasks/instant", json=body)


def task_ids_of(tasks: list[dict[str, Any]]) -> set[str]:
    return {t["task_id"] for t in tasks}


def task_ids(reply: httpx.Response) -> set[str]:
    """The task ids of a task list reply."""
    assert reply.status_code == 200, reply.text
    return task_ids_of(reply.json()["tasks"])


def test_only_health_and_openapi_are_open(keystack: Stack) -> None:
    with httpx.Client(base_url=keystack.settings.base_url, timeout=30) as raw:
        assert raw.get("/health").status_code == 200
        assert raw.get("/openapi.json").status_code == 200
        for method, path in (("GET", "/api/v1/agents"), ("POST", "/api/v1/keys")):
            reply = raw.request(method, path)
            assert reply.status_code == 401 and code(reply) == "401.1", reply.text


def test_a_replayed_request_is_refused(keystack: Stack) -> None:
    admin = read_key_file(keystack.settings.admin_key_path)
    path = "/api/v1/agents"
    headers = sign(admin.key_id, admin.secret, "GET", path, b"", time.time())
    with httpx.Client(base_url=keystack.settings.base_url, timeout=30) as raw:
        assert raw.get(path, headers=headers).status_code == 200
        again = raw.get(path, headers=headers)
    assert again.status_code == 401 and code(again) == "401.10", again.text


def test_bad_signatures_unknown_keys_and_old_timestamps_have_their_codes(
    keystack: Stack,
) -> None:
    admin = read_key_file(keystack.settings.admin_key_path)
    ok = send(keystack, admin, "GET", "/api/v1/agents")
    assert ok.status_code == 200, ok.text
    forged = send(keystack, admin, "GET", "/api/v1/agents", headers={SIGNATURE_HEADER: "0" * 64})
    assert forged.status_code == 401 and code(forged) == "401.5"
    guessed = send(keystack, KeyFile(admin.key_id, "not-the-secret"), "GET", "/api/v1/agents")
    assert code(guessed) == "401.5"
    unknown = send(keystack, KeyFile("0123456789abcdef", "x"), "GET", "/api/v1/agents")
    assert unknown.status_code == 401 and code(unknown) == "401.9"

    old = int(time.time()) - 1000
    headers = sign(admin.key_id, admin.secret, "GET", "/api/v1/agents", b"", old)
    with httpx.Client(base_url=keystack.settings.base_url, timeout=30) as raw:
        late = raw.get("/api/v1/agents", headers=headers)
        assert late.status_code == 401 and code(late) == "401.7", late.text
        bad = raw.get("/api/v1/agents", headers={**headers, TIMESTAMP_HEADER: "yesterday"})
        assert code(bad) == "401.8"
        short = raw.get("/api/v1/agents", headers={**headers, NONCE_HEADER: "x"})
        assert code(short) == "401.1"
    # A body changed after signing: the signature was over another body.
    signed = sign(
        admin.key_id, admin.secret, "POST", "/api/v1/audit", b'{"sql": "SELECT 1"}', time.time()
    )
    with httpx.Client(base_url=keystack.settings.base_url, timeout=30) as raw:
        swapped = raw.post("/api/v1/audit", content=b'{"sql": "SELECT 2"}', headers=signed)
    assert code(swapped) == "401.5"


def test_an_app_scoped_key_cannot_touch_another_apps_queue_task_or_cron(
    keystack: Stack, tmp_path: Path
) -> None:
    admin = keystack.client
    queue_b = admin.post("/api/v1/queues", json={"app": "hostfacts"}).json()["queue_id"]
    task_b = run(admin, "hostfacts", WEB).json()["task_id"]
    cron_body = {"agent": WEB, "app": "hostfacts", "func": "facts", "rule": "0 0 1 1 *"}
    cron_b = admin.post("/api/v1/crons", json=cron_body)
    assert cron_b.status_code == 201, cron_b.text
    cron_b_id = cron_b.json()["cron_id"]
    wait_for("task B in the audit", lambda: admin.get(f"/api/v1/tasks/{task_b}").is_success)

    key = new_key(keystack, ["apptest"], ["*"], ["queue", "cron", "read", "exec"])
    with as_key(keystack, key, tmp_path) as a:
        refused = [
            a.get(f"/api/v1/queues/{queue_b}"),
            a.post(f"/api/v1/queues/{queue_b}/tasks", json={"agent": WEB, "func": "facts"}),
            a.post(
                f"/api/v1/queues/{queue_b}/tasks/batch",
                json={"tasks": [{"agent": WEB, "func": "facts"}]},
            ),
            a.post(f"/api/v1/queues/{queue_b}/commit"),
            a.post(f"/api/v1/queues/{queue_b}/stop"),
            a.post(f"/api/v1/queues/{queue_b}/rerun"),
            a.get(f"/api/v1/tasks/{task_b}"),
            a.get(f"/api/v1/tasks/{task_b}/output"),
            a.get(f"/api/v1/tasks/{task_b}/output", params={"follow": "true"}),
            a.get(f"/api/v1/crons/{cron_b_id}"),
            a.post(f"/api/v1/crons/{cron_b_id}/pause"),
            a.delete(f"/api/v1/crons/{cron_b_id}"),
            a.post("/api/v1/queues", json={"app": "hostfacts"}),
            run(a, "hostfacts", WEB),
            a.post("/api/v1/crons", json=cron_body),
            a.get("/api/v1/apps/hostfacts"),
            a.post("/api/v1/audit", json={"sql": "SELECT count() FROM events"}),
        ]
        for reply in refused:
            assert reply.status_code == 403 and code(reply) == "401.6", reply.text
        assert "hostfacts" in refused[0].json()["error"]["message"]

        # Its own app works: a queue of its own, by id; the list hides the other app's cron.
        own = a.post("/api/v1/queues", json={"app": "apptest"})
        assert own.status_code == 201, own.text
        own_id = own.json()["queue_id"]
        assert a.post(f"/api/v1/queues/{own_id}/stop").status_code == 200
        wait_for("its queue", lambda: a.get(f"/api/v1/queues/{own_id}").status_code == 200)
        assert cron_b_id not in a.get("/api/v1/crons").text
        # The queue list shows its own app's queues only, whatever the filter asks: once a key
        # that may see everything finds the other app's queue there.
        wait_for(
            "the other app's queue in the list",
            lambda: queue_b
            in {q["queue_id"] for q in admin.get("/api/v1/queues").json()["queues"]},
        )
        listed = a.get("/api/v1/queues").json()["queues"]
        assert own_id in {q["queue_id"] for q in listed}
        assert {q["app"] for q in listed} == {"apptest"}
        assert a.get("/api/v1/queues", params={"app": "hostfacts"}).json()["queues"] == []
        # So does the task list, with its own task in it and the other app's not.
        own_task = run(a, "apptest", WEB).json()["task_id"]
        wait_for(
            "both apps' tasks in the list",
            lambda: {task_b, own_task} <= task_ids(admin.get("/api/v1/tasks")),
        )
        seen = a.get("/api/v1/tasks").json()["tasks"]
        assert own_task in task_ids_of(seen) and task_b not in task_ids_of(seen)
        assert {t["app"] for t in seen} == {"apptest"}
        assert a.get("/api/v1/tasks", params={"app": "hostfacts"}).json()["tasks"] == []
    assert admin.get(f"/api/v1/crons/{cron_b_id}").json()["status"] == "active"
    admin.delete(f"/api/v1/crons/{cron_b_id}")


def test_an_agent_scoped_key_runs_only_on_its_agents(keystack: Stack, tmp_path: Path) -> None:
    key = new_key(keystack, ["*"], ["role=web"], ["exec", "read", "cron"])
    with as_key(keystack, key, tmp_path) as web:
        mine = run(web, "apptest", WEB)
        assert mine.status_code == 200, mine.text
        task_id = mine.json()["task_id"]
        # The audit says who asked: the key that signed, not a name the client gave itself.
        asked = wait_for(
            "the submission in the audit",
            lambda: keystack.audit(
                "SELECT JSONExtractString(payload, 'requested_by') FROM events "
                f"WHERE task_id = '{task_id}' AND type = 'TaskSubmitted'"
            ),
        )
        assert asked == [[key.key_id]]
        other = run(web, "apptest", DB)
        assert other.status_code == 403 and code(other) == "401.6", other.text
        assert DB in other.json()["error"]["message"]
        by_selector = run(web, "apptest", selector="role=db")
        assert by_selector.status_code == 403 and code(by_selector) == "401.6"
        assert run(web, "apptest", selector="role=web").status_code == 200
        cron = {"app": "apptest", "func": "helloword", "rule": "0 0 1 1 *"}
        assert code(web.post("/api/v1/crons", json={**cron, "selector": "role=db"})) == "401.6"
        assert code(web.post("/api/v1/crons", json={**cron, "agent": DB})) == "401.6"
        listed = [a["agent_id"] for a in web.get("/api/v1/agents").json()["agents"]]
        assert listed == [WEB]
        # The task list shows the tasks on its agents only, the selector's too.
        theirs = run(keystack.client, "apptest", DB).json()["task_id"]
        wait_for(
            "both agents' tasks in the list",
            lambda: {task_id, theirs} <= task_ids(keystack.client.get("/api/v1/tasks")),
        )
        seen = web.get("/api/v1/tasks").json()["tasks"]
        assert task_id in task_ids_of(seen) and theirs not in task_ids_of(seen)
        assert {t["agent_id"] for t in seen} == {WEB}
        assert web.get("/api/v1/tasks", params={"agent": DB}).json()["tasks"] == []
        assert code(web.get(f"/api/v1/agents/{DB}")) == "401.6"


def test_a_read_only_key_reads_but_cannot_run(keystack: Stack, tmp_path: Path) -> None:
    key = new_key(keystack, ["*"], ["*"], ["read"])
    with as_key(keystack, key, tmp_path) as reader:
        assert reader.get("/api/v1/agents").status_code == 200
        audit = reader.post("/api/v1/audit", json={"sql": "SELECT count() FROM events"})
        assert audit.status_code == 200, audit.text  # read for every app and agent: raw SQL
        refused = run(reader, "apptest", WEB)
        assert refused.status_code == 403 and code(refused) == "401.6"
        assert code(reader.post("/api/v1/queues", json={"app": "apptest"})) == "401.6"
        assert code(reader.get("/api/v1/keys")) == "401.6"
        wider = {"apps": ["*"], "agents": ["*"], "operations": ["admin"]}
        assert code(reader.post("/api/v1/keys", json=wider)) == "401.6"


def test_a_revoked_key_stops_working(keystack: Stack, tmp_path: Path) -> None:
    key = new_key(keystack, ["*"], ["*"], ["read"])
    with as_key(keystack, key, tmp_path) as c:
        assert c.get("/api/v1/agents").status_code == 200
        revoked = keystack.client.delete(f"/api/v1/keys/{key.key_id}")
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        after = c.get("/api/v1/agents")
        assert after.status_code == 401 and code(after) == "401.9", after.text
    listed = {k["key_id"]: k for k in keystack.client.get("/api/v1/keys").json()["keys"]}
    assert listed[key.key_id]["status"] == "revoked"
    assert all("secret" not in k and "sealed_secret" not in k for k in listed.values())
    assert keystack.client.delete("/api/v1/keys/nope").status_code == 404


def test_the_cli_creates_lists_and_revokes_keys(keystack: Stack, tmp_path: Path) -> None:
    def elves(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(keystack, *args, key_file=keystack.settings.admin_key_path)

    out = tmp_path / "reader.key"
    made = elves("key", "create", "--app", "*", "--agent", "*", "--op", "read", "-o", str(out))
    assert made.returncode == 0, made.stdout + made.stderr
    key = read_key_file(out)
    SECRETS.append(key.secret)
    assert key.secret not in made.stdout and (out.stat().st_mode & 0o777) == 0o600
    listed = elves("key", "list")
    assert listed.returncode == 0 and key.key_id in listed.stdout
    assert key.secret not in listed.stdout
    assert elves("key", "revoke", key.key_id).returncode == 0
    assert "revoked" in elves("key", "list").stdout
    assert elves("key", "create", "--app", "*", "--agent", "*", "--op", "fly").returncode == 2

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return elves("call", *args)

    agents = call("GET", "/api/v1/agents")
    assert agents.returncode == 0 and WEB in agents.stdout, agents.stdout
    counted = call("GET", "/api/v1/audit?sql=SELECT+count()+FROM+events")
    assert counted.returncode == 0 and '"rows"' in counted.stdout, counted.stdout
    posted = call("POST", "/api/v1/audit", "-d", '{"sql": "SELECT 1"}')
    assert posted.returncode == 0 and '"rows":[[1]]' in posted.stdout, posted.stdout


def test_no_secret_in_the_logs_the_audit_or_kafka(keystack: Stack) -> None:
    """Last: after every request above, no secret in clear anywhere but its key file."""
    assert len(SECRETS) >= 5
    wait_for(
        "the key events in the audit",
        lambda: keystack.audit("SELECT count() FROM events WHERE type = 'ApiKeyRevoked'")[0][0]
        >= 2,
    )
    logs = "".join(
        p.read_text(errors="replace") for p in keystack.settings.state_dir.glob("logs/*")
    )
    assert logs
    payloads = " ".join(r[0] for r in keystack.audit("SELECT payload FROM events"))
    created = keystack.audit("SELECT payload FROM events WHERE type = 'ApiKeyCreated'")
    assert len(created) == len(SECRETS) and all("sealed_secret" not in r[0] for r in created)
    topic = keystack.settings.topic("keys")
    c = consumer(keystack.settings, f"{keystack.settings.topic_prefix}grep")
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    raw = b"".join(
        m.value() or b"" for m in c.consume(len(SECRETS) + 10, timeout=5) if not m.error()
    )
    c.close()
    assert raw
    for secret in SECRETS:
        assert secret not in logs
        assert secret not in payloads
        assert secret.encode() not in raw
