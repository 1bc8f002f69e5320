"""App packages end to end: publish, install on the agent, a failed install keeps the old
version (and the heartbeat says why), a good one replaces it, a rollback brings the old back."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx

from elves.agent.identity import agent_key
from elves.appstore import AppStore
from elves.client import agent_client
from elves.local import Stack, wait_for
from elves.packages import sha256_of

from .conftest import AGENT
from .test_cli import elves


def package(app: str, version: str, files: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        manifest = {"entry": "app-worker.py", "version": version, "description": "test"}
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("app-worker.py", "from elves.apps.sdk.worker import main\n\nmain()\n")
        answer = f"v{version}"
        zf.writestr(
            f"{app}.py",
            f"class {app}:\n    def which(self, param):\n        return 'true', {answer!r}\n",
        )
        for name, body in (files or {}).items():
            zf.writestr(name, body)
    return buf.getvalue()


def publish(stack: Stack, app: str, version: str, data: bytes, **params: str) -> httpx.Response:
    return stack.client.post(
        f"/api/v1/apps/{app}/versions/{version}",
        content=data,
        params=params,
        headers={"content-type": "application/zip"},
    )


def agent(stack: Stack) -> dict[str, Any]:
    response = stack.client.get(f"/api/v1/agents/{AGENT}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def runs(stack: Stack, app: str) -> str:
    data = stack.exec(AGENT, app, "which").json()
    assert data["worker_flag"] == 1, data
    return str(data["worker_message"])


def test_publish_install_fail_keep_upgrade_and_roll_back(stack: Stack) -> None:
    app = f"pkg{uuid.uuid4().hex[:8]}"
    v1, v2 = package(app, "1"), package(app, "2")

    done = publish(stack, app, "1", v1)
    assert done.status_code == 201, done.text
    assert (done.json()["sha256"], done.json()["active"]) == (sha256_of(v1), "1")
    wait_for("v1 installed", lambda: agent(stack)["apps"].get(app) == "1")
    assert runs(stack, app) == "v1"

    # v2 stored, then its bytes in the store go bad: the agent must refuse them.
    stored = publish(stack, app, "2", v2, activate="false")
    assert stored.status_code == 201 and stored.json()["active"] == "1", stored.text
    AppStore(stack.settings.app_store_dir).path_of(sha256_of(v2)).write_bytes(v2[:-8] + b"garbage!")
    activated = stack.client.post(f"/api/v1/apps/{app}/active", json={"version": "2"})
    assert activated.json() == {"app": app, "active": "2", "previous": "1"}, activated.text
    errors = wait_for("the failure reported", lambda: agent(stack)["install_errors"].get(app))
    assert errors.startswith("2: checksum mismatch"), errors
    assert agent(stack)["apps"][app] == "1"
    assert runs(stack, app) == "v1"

    # The good v2 again: the store is mended, the activation is new, the agent installs it.
    again = publish(stack, app, "2", v2)
    assert again.status_code == 201 and again.json()["new"] is False, again.text
    wait_for(
        "v2 installed",
        lambda: (a := agent(stack))["apps"].get(app) == "2" and app not in a["install_errors"],
    )
    assert runs(stack, app) == "v2"

    # Rollback: activate v1 again.
    back = stack.client.post(f"/api/v1/apps/{app}/active", json={"version": "1"})
    assert back.status_code == 200, back.text
    wait_for("v1 back", lambda: agent(stack)["apps"].get(app) == "1")
    assert runs(stack, app) == "v1"

    listed = {a["app"]: a for a in stack.client.get("/api/v1/apps").json()["apps"]}
    assert listed[app]["active"] == "1"
    assert [v["version"] for v in listed[app]["versions"]] == ["1", "2"]
    download = stack.client.get(f"/api/v1/apps/{app}/versions/2/package")
    assert download.content == v2
    assert download.headers["x-elves-sha256"] == sha256_of(v2)


def test_bad_packages_and_unknown_versions_are_refused(stack: Stack) -> None:
    app = f"pkg{uuid.uuid4().hex[:8]}"
    slip = publish(stack, app, "1", package(app, "1", {"../../evil.py": "x"}))
    assert (slip.status_code, slip.json()["error"]["code"]) == (400, "413.2"), slip.text
    assert "unsafe path" in slip.json()["error"]["message"]
    wrong = publish(stack, app, "2", package(app, "1"))  # the manifest says version 1
    assert wrong.json()["error"]["code"] == "413.2"
    garbage = publish(stack, app, "1", b"not a zip")
    assert garbage.json()["error"]["code"] == "413.2"
    unknown = stack.client.post(f"/api/v1/apps/{app}/active", json={"version": "1"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "413.3")
    missing = stack.client.get(f"/api/v1/apps/{app}/versions/1/package")
    assert missing.json()["error"]["code"] == "413.3"
    first = publish(stack, app, "1", package(app, "1"), activate="false")
    assert first.status_code == 201
    taken = publish(stack, app, "1", package(app, "1", {"extra.txt": "other content"}))
    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "413.4")


def test_the_cli_publishes_a_folder_and_activates(stack: Stack, tmp_path: Path) -> None:
    app = f"pkg{uuid.uuid4().hex[:8]}"
    folder = tmp_path / app
    with zipfile.ZipFile(io.BytesIO(package(app, "3"))) as zf:
        zf.extractall(folder)
    published = elves(stack, "app", "publish", str(folder), "--no-activate")
    assert published.returncode == 0, published.stdout + published.stderr
    assert f"{app} 3 sha256" in published.stdout
    listed = elves(stack, "app", "list")
    assert listed.returncode == 0 and app in listed.stdout
    assert elves(stack, "app", "activate", app, "3").returncode == 0
    assert elves(stack, "app", "activate", app, "4").returncode == 1
    wait_for("v3 installed", lambda: agent(stack)["apps"].get(app) == "3")
    assert runs(stack, app) == "v3"


def test_an_agent_downloads_with_its_own_key_once_accepted_and_that_key_opens_nothing_else(
    stack: Stack, tmp_path: Path
) -> None:
    """No API key file at all: the agent signs its downloads with its enrolled key. Pending, it
    is refused (401.9, in its install errors); accepted, it installs at once; its key opens its
    packages and no other route (401.6)."""
    app, agent_id = f"own{uuid.uuid4().hex[:6]}", f"it-own-{uuid.uuid4().hex[:6]}"
    no_key = str(tmp_path / "no-such.key")
    process = stack.spawn_agent(agent_id, accept=False, ELVES_KEY_FILE=no_key)
    try:
        wait_for("its registration", lambda: stack.registered(agent_id), 30)
        assert publish(stack, app, "1", package(app, "1")).status_code == 201

        def listed() -> dict[str, Any]:
            data: dict[str, Any] = stack.client.get(f"/api/v1/agents/{agent_id}").json()
            return data

        refused = wait_for("the download refused", lambda: listed()["install_errors"].get(app))
        assert "401.9" in refused and "not accepted" in refused
        stack.accept(agent_id)
        wait_for(f"{app} installed once accepted", lambda: listed()["apps"].get(app) == "1", 30)
        assert app not in listed()["install_errors"]

        with agent_client(stack.settings, agent_id, agent_key(stack.settings, agent_id)) as own:
            assert own.get(f"/api/v1/apps/{app}/versions/1/package").status_code == 200
            other = own.get("/api/v1/agents")
            assert other.status_code == 403 and other.json()["error"]["code"] == "401.6"
            assert "opens only" in other.json()["error"]["message"]
    finally:
        process.stop()
        stack.processes.remove(process)
