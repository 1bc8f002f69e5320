"""Installing packages on an agent: checksum, atomic unpack and switch, failures keep the old
version; the runner finds installed apps before the apps folder."""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

from elves import app_versions
from elves.agent.install import (
    activate,
    current_version,
    install,
    installed_versions,
    prune,
)
from elves.agent.rollout import InstallFailed, Rollout
from elves.agent.runner import FLAG_OK, Runner, TaskSpec
from elves.config import Settings
from elves.errors import BadPackage
from elves.packages import sha256_of
from elves.schemas.codec import CODEC
from elves.schemas.events import AgentAccepted, AppVersionPublished, Event

SAMPLES = Path(__file__).resolve().parents[2] / "apps" / "samples"
LIMIT = 1 << 20


def package(app: str, answer: str, manifest: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", manifest or json.dumps({"entry": "app-worker.py"}))
        zf.writestr("app-worker.py", "from elves.apps.sdk.worker import main\n\nmain()\n")
        zf.writestr(
            f"{app}.py",
            f"class {app}:\n    def which(self, param):\n        return 'true', {answer!r}\n",
        )
    return buf.getvalue()


def test_install_then_activate(tmp_path: Path) -> None:
    data = package("demo", "v1")
    folder = install(tmp_path, "demo", "1", sha256_of(data), data, LIMIT)
    assert folder == tmp_path / "demo" / "1"
    assert (folder / "demo.py").is_file()
    assert current_version(tmp_path, "demo") is None  # installed is not yet running
    activate(tmp_path, "demo", "1")
    assert installed_versions(tmp_path) == {"demo": "1"}
    assert os.readlink(tmp_path / "demo" / "current") == "1"
    assert [p.name for p in (tmp_path / "demo").iterdir() if p.name.startswith(".")] == []


def test_a_checksum_mismatch_installs_nothing(tmp_path: Path) -> None:
    data = package("demo", "v1")
    with pytest.raises(BadPackage, match="checksum mismatch"):
        install(tmp_path, "demo", "1", sha256_of(b"other"), data, LIMIT)
    assert not (tmp_path / "demo" / "1").exists()


def test_a_failed_install_keeps_the_previous_version(tmp_path: Path) -> None:
    v1 = package("demo", "v1")
    install(tmp_path, "demo", "1", sha256_of(v1), v1, LIMIT)
    activate(tmp_path, "demo", "1")
    for bad in (b"not a zip", package("demo", "v2", manifest="{broken")):
        with pytest.raises(BadPackage):
            install(tmp_path, "demo", "2", sha256_of(bad), bad, LIMIT)
    with pytest.raises(BadPackage, match="not installed"):
        activate(tmp_path, "demo", "2")
    assert installed_versions(tmp_path) == {"demo": "1"}
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["1", "current"]


def test_switching_back_and_forth(tmp_path: Path) -> None:
    for version in ("1", "2"):
        data = package("demo", version)
        install(tmp_path, "demo", version, sha256_of(data), data, LIMIT)
    activate(tmp_path, "demo", "2")
    activate(tmp_path, "demo", "1")
    assert current_version(tmp_path, "demo") == "1"


def _published(app: str, version: str, data: bytes, activation: str) -> list[Event]:
    event = AppVersionPublished(f"p{version}", 1, app, version, sha256_of(data), len(data), "x")
    return app_versions.decide_publish(None, event, activation)


def test_rollout_reports_a_failure_and_retries_on_the_next_activation(tmp_path: Path) -> None:
    served: dict[str, bytes] = {}

    def fetch(app: str, version: str) -> bytes:
        if version not in served:
            raise InstallFailed("download failed: HTTP 404")
        return served[version]

    rollout = Rollout(Settings(state_dir=tmp_path), "a1", fetch=fetch)
    v1, v2 = package("demo", "v1"), package("demo", "v2")
    served["1"] = v1
    for e in _published("demo", "1", v1, "act-1"):
        rollout.apply(e)
    rollout.reconcile()
    assert (rollout.versions(), rollout.errors()) == ({"demo": "1"}, {})

    served["2"] = v2[:-10] + b"corrupted!"  # not the bytes the version was published with
    for e in _published("demo", "2", v2, "act-2"):
        rollout.apply(e)
    rollout.reconcile()
    assert rollout.versions() == {"demo": "1"}
    assert "checksum mismatch" in rollout.errors()["demo"]
    rollout.reconcile()  # nothing new asked: no retry
    served["2"] = v2
    state = rollout._apps["demo"]
    for e in app_versions.decide_activate(state, "demo", "2", "act-3", 2):
        rollout.apply(e)
    rollout.reconcile()
    assert (rollout.versions(), rollout.errors()) == ({"demo": "2"}, {})
    for e in app_versions.decide_activate(rollout._apps["demo"], "demo", "1", "act-4", 3):
        rollout.apply(e)
    served.clear()  # a rollback to an installed version needs no download
    rollout.reconcile()
    assert (rollout.versions(), rollout.errors()) == ({"demo": "1"}, {})


def test_a_failed_install_is_tried_again_later_and_at_once_when_the_agent_is_accepted(
    tmp_path: Path,
) -> None:
    refused = True  # the gateway refuses a pending agent's download (401.9)

    def fetch(app: str, version: str) -> bytes:
        if refused:
            raise InstallFailed("download failed: HTTP 401 [401.9] agent a1 is not accepted")
        return v1

    rollout = Rollout(Settings(state_dir=tmp_path), "a1", fetch=fetch)
    v1 = package("demo", "v1")
    for e in _published("demo", "1", v1, "act-1"):
        rollout.apply(e)
    rollout.reconcile()
    assert "401.9" in rollout.errors()["demo"]
    assert not rollout.retry_due()  # 5 s from now
    first = rollout._retry_at["demo"]
    rollout._retry_at["demo"] = 0.0  # time passes
    assert rollout.retry_due()
    rollout.reconcile()  # refused again: the next try waits twice as long
    assert rollout._retry_at["demo"] - first > 4.0
    refused = False
    rollout._enrolment(CODEC.encode(AgentAccepted("e1", 1, "a2", "aa" * 32)))  # another agent
    assert not rollout.retry_due()
    rollout._enrolment(CODEC.encode(AgentAccepted("e2", 1, "a1", "aa" * 32)))
    assert rollout.retry_due()
    rollout.reconcile()
    assert (rollout.versions(), rollout.errors(), rollout._retry_at) == ({"demo": "1"}, {}, {})


def test_the_runner_finds_installed_apps_first(tmp_path: Path) -> None:
    data = package("apptest", "from the package")
    install(tmp_path, "apptest", "9", sha256_of(data), data, LIMIT)
    runner = Runner(SAMPLES, 10_000, python=sys.executable, installed=tmp_path)
    # Installed but not current: the sample folder still runs.
    assert runner.locate("apptest")[0] == SAMPLES / "apptest"
    activate(tmp_path, "apptest", "9")
    folder = (tmp_path / "apptest" / "9").resolve()
    assert runner.locate("apptest") == (folder, folder / "app-worker.py")
    result = runner.run(TaskSpec("apptest", "which", "{}", 20))
    assert (result.worker_flag, result.worker_message) == (FLAG_OK, "from the package")
    assert runner.locate("noop")[0] == SAMPLES / "noop"  # not installed: the apps folder


def test_the_runner_sees_a_new_current_version_and_a_changed_manifest_at_the_next_task(
    tmp_path: Path,
) -> None:
    """The runner keeps where an app runs from; a switch of `current` or an edited manifest
    must still reach the very next task."""
    installed = tmp_path / "installed"
    for version in ("1", "2"):
        data = package("apptest", f"from version {version}")
        install(installed, "apptest", version, sha256_of(data), data, LIMIT)
    runner = Runner(tmp_path / "apps", 10_000, python=sys.executable, installed=installed)
    which = TaskSpec("apptest", "which", "{}", 20)
    activate(installed, "apptest", "1")
    assert runner.run(which).worker_message == "from version 1"
    activate(installed, "apptest", "2")
    assert runner.run(which).worker_message == "from version 2"
    # A folder app (no package): its manifest's proxy, read again once the file changed.
    folder = tmp_path / "apps" / "shellapp"
    folder.mkdir(parents=True)
    tags = "<ElvesWFlag>true</ElvesWFlag><ElvesWResult>%s</ElvesWResult>"
    (folder / "a.sh").write_text(f'printf "{tags}" a\n')
    (folder / "b.sh").write_text(f'printf "{tags}" b\n')
    shell = TaskSpec("shellapp", "f", "{}", 20)
    assert runner.run(shell).worker_message.startswith("app 'shellapp' not installed")
    (folder / "manifest.json").write_text(json.dumps({"proxy": "sh|a.sh"}))
    assert runner.run(shell).worker_message == "a"
    (folder / "manifest.json").write_text(json.dumps({"proxy": "sh|b.sh", "x": "longer"}))
    assert runner.run(shell).worker_message == "b"


def test_prune_keeps_the_current_and_the_newest_versions(tmp_path: Path) -> None:
    for n, version in enumerate(("1", "2", "3", "4")):
        data = package("demo", version)
        folder = install(tmp_path, "demo", version, sha256_of(data), data, LIMIT)
        os.utime(folder, (1_000 + n, 1_000 + n))  # installed in this order
    activate(tmp_path, "demo", "1")  # a rollback: the oldest runs
    assert prune(tmp_path, "demo", keep=2) == ["2"]
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["1", "3", "4", "current"]
    assert current_version(tmp_path, "demo") == "1"
    assert prune(tmp_path, "demo", keep=2) == []  # nothing more to remove
    assert prune(tmp_path, "nosuchapp", keep=2) == []
