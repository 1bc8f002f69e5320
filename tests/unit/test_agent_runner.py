"""The runner with real processes, both as plain subprocesses and forked from the fork server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elves.agent.forkclient import ForkServer
from elves.agent.forkserver import recv, send
from elves.agent.output import OutputParts, OutputStream, Part
from elves.agent.runner import STOPPING, Runner, TaskSpec, parse_output
from elves.local import wait_for

SAMPLES = Path(__file__).resolve().parents[2] / "apps" / "samples"


@pytest.fixture(scope="module")
def forkserver() -> Iterator[ForkServer]:
    server = ForkServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["plain", "forked"])
def runner(request: pytest.FixtureRequest, forkserver: ForkServer) -> Runner:
    server = forkserver if request.param == "forked" else None
    return Runner(SAMPLES, max_output_bytes=1000, forkserver=server)


def spec(app: str, func: str, params: object = None, timeout: float = 30, **kw: str) -> TaskSpec:
    return TaskSpec(app, func, json.dumps(params or {}), timeout, **kw)


def alive(pid: int) -> bool:
    """True while pid runs; a zombie (no init reaping it in a container) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_apptest_is_flag_1_toryzen(runner: Runner) -> None:
    result = runner.run(spec("apptest", "helloword", {"my": "toryzen"}))
    assert (result.worker_flag, result.worker_message) == (1, "toryzen")
    assert result.forked is (runner.forkserver is not None)
    assert result.worker_costtime >= 0


def test_false_is_flag_0(runner: Runner) -> None:
    result = runner.run(spec("crasher", "falsy"))
    assert (result.worker_flag, result.worker_message) == (0, "nope")


def test_an_exception_is_flag_0_with_traceback(runner: Runner) -> None:
    result = runner.run(spec("crasher", "boom"))
    assert result.worker_flag == 0
    assert "RuntimeError: boom" in result.worker_message


@pytest.mark.parametrize(("how", "code"), [("exit", 3), ("raise", 2)])
def test_non_zero_exit_is_flag_minus_1_with_stderr(runner: Runner, how: str, code: int) -> None:
    result = runner.run(spec("crasher", "crash", {"how": how, "code": code}))
    assert result.worker_flag == -1
    assert result.worker_message == f"exit code {code}: crasher: going down"
    assert result.exit_code == code


def test_stdout_printed_before_stderr_is_read_before_it_whatever_the_pipes_fds(
    runner: Runner,
) -> None:
    """Both pipes readable at once are read stdout first, as printed. The fds are placed where a
    set of them iterates stderr's first (15, 17 in a table of 8 slots): a task page once showed
    the stderr line above the stdout one printed before it."""
    held: list[int] = []
    try:
        while (fd := os.open(os.devnull, os.O_RDONLY)) % 8 != 7:
            held.append(fd)
        os.close(fd)  # the next pipe's read end takes it
        for _ in range(5):
            got: list[Part] = []
            stream = OutputStream(OutputParts(1 << 20), got.extend)
            runner.run(spec("crasher", "crash", {"stdout": "step 1\n"}), output=stream)
            assert [(p.stream, p.data) for p in got] == [
                ("stdout", "step 1\n"),
                ("stderr", "crasher: going down\n"),
            ]
    finally:
        for fd in held:
            os.close(fd)


def test_exit_0_without_tags_is_flag_minus_1(runner: Runner) -> None:
    result = runner.run(spec("crasher", "crash", {"code": 0, "stdout": "hello"}))
    assert result.worker_flag == -1
    assert result.worker_message == "no ElvesWFlag in output: hello"


def test_an_app_not_installed_is_flag_minus_1(runner: Runner) -> None:
    result = runner.run(spec("nosuchapp", "x"))
    assert (result.worker_flag, result.worker_message) == (-1, "app 'nosuchapp' not installed")


def test_a_bad_app_name_is_refused(runner: Runner) -> None:
    assert runner.run(spec("../apptest", "helloword")).worker_flag == -1


def test_output_past_the_cap_is_cut_and_flagged(runner: Runner) -> None:
    result = runner.run(spec("crasher", "noisy", {"bytes": 200_000}))
    assert result.truncated
    assert result.worker_flag == 1  # the tags survive the cut: the tail is kept
    assert result.worker_message.startswith("x" * 900)
    assert "[output truncated]" in result.worker_message
    assert len(result.worker_message) < 1000 + 5000


def test_output_under_the_cap_is_whole(runner: Runner) -> None:
    result = runner.run(spec("crasher", "noisy", {"bytes": 500}))
    assert (result.truncated, result.worker_message) == (False, "x" * 500)


def test_timeout_kills_the_whole_process_group(runner: Runner, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    pids: list[int] = []
    result = runner.run(
        spec("sleeper", "sleep", {"seconds": 120, "pidfile": str(pidfile)}, timeout=1),
        on_start=pids.append,
    )
    assert (result.worker_flag, result.worker_message) == (-1, "timeout after 1s")
    assert result.worker_costtime >= 1000
    child = int(pidfile.read_text())
    # SIGKILL was sent to the group; its delivery to the grandchild is asynchronous.
    end = time.monotonic() + 5
    while alive(child) and time.monotonic() < end:
        time.sleep(0.01)
    assert not alive(child)
    assert not alive(pids[0])


def test_cancel_kills_a_running_task(runner: Runner) -> None:
    cancel = threading.Event()
    result = runner.run(
        spec("sleeper", "sleep", {"seconds": 120}),
        on_start=lambda _pid: cancel.set(),
        cancel=cancel,
    )
    assert (result.worker_flag, result.worker_message) == (-1, STOPPING)


def test_still_running_is_called_once_a_task_has_run_that_long(runner: Runner) -> None:
    """The call comes while the process runs, after the time asked and once; a task that ends
    first gets none."""
    cancel = threading.Event()
    started: list[float] = []
    calls: list[tuple[float, bool]] = []

    def still_running() -> None:
        calls.append((time.monotonic(), alive(pids[0])))
        cancel.set()  # ends the task: had the call not come, the sleep would run to its timeout

    pids: list[int] = []
    # The runner counts from before it starts the process: on_start comes later, by as long as
    # the spawn took (a loaded machine made that over 10 ms).
    before = time.monotonic()
    result = runner.run(
        spec("sleeper", "sleep", {"seconds": 120}, timeout=10),
        on_start=lambda pid: (pids.append(pid), started.append(time.monotonic())),
        cancel=cancel,
        still_running=still_running,
        still_running_after_s=0.3,
    )
    assert result.worker_message == STOPPING
    assert len(calls) == 1
    at, was_alive = calls[0]
    assert was_alive and at - before >= 0.3 and at > started[0]
    quick: list[bool] = []
    done = runner.run(
        spec("apptest", "helloword", {"my": "x"}),
        still_running=lambda: quick.append(True),
        still_running_after_s=5,
    )
    assert (done.worker_flag, quick) == (1, [])


@pytest.mark.parametrize("when", ["on_start", "still_running"])
def test_a_failing_callback_kills_the_task_it_was_called_for(runner: Runner, when: str) -> None:
    """The error reaches the caller, and the task is not left running unwatched."""
    pids: list[int] = []

    def fail(*pid: int) -> None:
        pids.extend(pid)
        raise OSError("the disk is full")

    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="the disk is full"):
        runner.run(
            spec("sleeper", "sleep", {"seconds": 120}, timeout=60),
            on_start=fail if when == "on_start" else pids.append,
            still_running=fail if when == "still_running" else None,
            still_running_after_s=0.5,
        )
    wait_for("the task killed", lambda: not alive(pids[0]), timeout=5)
    assert set(os.listdir("/proc/self/fd")) <= before  # its pipes and socket closed


@pytest.mark.parametrize("how", ["plain", "forked"])
def test_what_a_task_prints_is_handed_on_while_it_runs_without_its_result(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's stdout is line-buffered, so each line reaches the runner as it is printed, and
    a quiet spell sends what waits: parts arrive a tick apart, before the process ends."""
    # Without PYTHONUNBUFFERED (set on some machines, never on an agent's by us): a pipe is
    # block-buffered then, unless the SDK says otherwise.
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    server = ForkServer() if how == "forked" else None
    if server is not None:
        server.start()  # it inherits the environment above
    runner = Runner(SAMPLES, max_output_bytes=1000, forkserver=server)
    got: list[tuple[float, Part]] = []
    stream = OutputStream(
        OutputParts(1 << 20, wait_s=0.1),
        lambda parts: got.extend((time.monotonic(), p) for p in parts),
    )
    try:
        result = runner.run(spec("sleeper", "tick", {"n": 4, "every": 0.4}), output=stream)
        ended = time.monotonic()
    finally:
        if server is not None:
            server.close()
    assert result.forked == (how == "forked")
    assert (result.worker_flag, result.worker_message) == (1, "ticked 4 times")
    printed = [(p.stream, p.data) for _, p in got]
    assert "".join(d for s, d in printed if s == "stdout") == "".join(
        f"tick {i}\n" for i in range(1, 5)
    )
    assert ("stderr", "half way\n") in printed
    assert [p.seq for _, p in got] == list(range(len(got)))
    assert result.output_parts == stream.sent == len(got) > 0  # the result says how many went
    # 'tick 1' came alone, about 1.1 s before the end (the ticks after it take 1.2 s).
    first_at, first = next((at, p) for at, p in got if p.stream == "stdout")
    assert first.data == "tick 1\n"
    assert ended - first_at > 0.6


def test_proxy_interp_and_file_overrides_the_entry(runner: Runner) -> None:
    worker = SAMPLES / "apptest" / "app-worker.py"
    result = runner.run(
        spec("apptest", "helloword", {"my": "p"}, proxy=f"{sys.executable}|{worker}")
    )
    assert (result.worker_flag, result.worker_message, result.forked) == (1, "p", False)


def test_proxy_file_alone_is_the_entry(runner: Runner, tmp_path: Path) -> None:
    script = tmp_path / "entry.sh"
    tags = "<ElvesWFlag>true</ElvesWFlag><ElvesWResult>%s %s</ElvesWResult>"
    script.write_text(f'#!/bin/sh\nprintf "{tags}" "$1" "$2"\n')
    script.chmod(0o755)
    result = runner.run(spec("anyapp", "f", proxy=str(script)))
    assert (result.worker_flag, result.worker_message) == (1, "anyapp f")


def test_the_fork_server_comes_back_after_it_dies(tmp_path: Path) -> None:
    server = ForkServer()
    server.start()
    try:
        assert server._proc is not None
        server._proc.kill()
        server._proc.wait()
        result = Runner(SAMPLES, 1000, forkserver=server).run(spec("noop", "noop"))
        assert (result.worker_flag, result.forked) == (1, True)
    finally:
        server.close()


def test_the_fork_server_kills_what_runs_when_its_agent_dies(tmp_path: Path) -> None:
    """A task's process is in a session of its own: once the agent is gone (its end of the
    channel closed, as by a `kill -9`), only the server can end it and what it started."""
    server = ForkServer()
    server.start()
    pidfile = tmp_path / "child.pid"
    pids: list[int] = []
    runner = Runner(SAMPLES, 1000, forkserver=server)
    task = threading.Thread(
        target=runner.run,
        args=(spec("sleeper", "sleep", {"seconds": 120, "pidfile": str(pidfile)}),),
        kwargs={"on_start": pids.append},
        daemon=True,
    )
    task.start()
    wait_for("the sleep's pid", pidfile.exists, 10)  # written whole (os.replace)
    grandchild = int(pidfile.read_text())
    assert server._channel is not None and server._proc is not None
    server._channel.close()  # the agent's death, as the server sees it
    server._proc.wait(timeout=10)
    wait_for("the task to be killed", lambda: not alive(pids[0]) and not alive(grandchild), 5)
    task.join(timeout=10)
    assert not task.is_alive()


@pytest.mark.parametrize(
    "request_",
    [{"argv": ["python"], "cwd": "/"}, {"argv": ["python", 7], "cwd": "/"}, {"argv": ["p", "s"]}],
)
def test_a_malformed_request_is_refused_and_the_server_goes_on(
    forkserver: ForkServer, request_: dict[str, object]
) -> None:
    """The agent's own bug, not a task's: the server answers an error and serves the next."""
    assert forkserver._channel is not None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    out_r, out_w = os.pipe()
    try:
        send(forkserver._channel, {"env": None, **request_}, [theirs.fileno(), out_w, out_w])
        theirs.close()
        answer, _ = recv(ours)
        assert answer is not None and answer["error"].startswith("bad request: ")
    finally:
        ours.close()
        for fd in (out_r, out_w):
            os.close(fd)
    result = Runner(SAMPLES, 1000, forkserver=forkserver).run(spec("noop", "noop"))
    assert (result.worker_flag, result.forked) == (1, True)


def test_the_forked_task_gets_argv_cwd_and_env(forkserver: ForkServer, tmp_path: Path) -> None:
    env = {**os.environ, "ELVES_PROBE": "42"}
    runner = Runner(SAMPLES, 1000, forkserver=forkserver, env=env)
    facts = runner.run(spec("hostfacts", "facts"))
    assert facts.worker_flag == 1 and facts.forked
    assert json.loads(facts.worker_message)["cpu_count"] == os.cpu_count()


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (b"<ElvesWFlag>true</ElvesWFlag><ElvesWResult>a</ElvesWResult>", (1, "a")),
        (b"noise<ElvesWFlag>false</ElvesWFlag>\n<ElvesWResult>b</ElvesWResult>", (0, "b")),
        (
            b"<ElvesWFlag>false</ElvesWFlag><ElvesWFlag>true</ElvesWFlag><ElvesWResult>c</ElvesWResult>",
            (1, "c"),
        ),
        (
            b"<ElvesWFlag>true</ElvesWFlag><ElvesWResult>x</ElvesWResult>y</ElvesWResult>",
            (1, "x</ElvesWResult>y"),
        ),
        (
            b"<ElvesWFlag>maybe</ElvesWFlag><ElvesWResult>d</ElvesWResult>",
            (-1, "bad ElvesWFlag 'maybe': d"),
        ),
        (b"", (-1, "no ElvesWFlag in output")),
    ],
)
def test_parse_output(stdout: bytes, expected: tuple[int, str]) -> None:
    assert parse_output(stdout) == expected


def test_a_manifests_proxy_is_the_entry_unless_the_task_names_one(tmp_path: Path) -> None:
    app = tmp_path / "shellapp"
    app.mkdir()
    tags = "<ElvesWFlag>true</ElvesWFlag><ElvesWResult>%s from sh</ElvesWResult>"
    (app / "run.sh").write_text(f'printf "{tags}" "$2"\n')
    (app / "manifest.json").write_text(json.dumps({"entry": "run.sh", "proxy": "sh|run.sh"}))
    runner = Runner(tmp_path, max_output_bytes=1000)
    assert runner.run(spec("shellapp", "deploy")).worker_message == "deploy from sh"
    other = tmp_path / "other.sh"
    other.write_text(tags.replace("from sh", "from the task").join(["printf '", '\' "$2"\n']))
    result = runner.run(spec("shellapp", "deploy", proxy=f"sh|{other}"))
    assert result.worker_message == "deploy from the task"


def _entry_app(root: Path, body: str) -> Runner:
    """An app `probe` whose app-worker.py is `body`, run through the fork server."""
    (root / "probe").mkdir(exist_ok=True)
    (root / "probe" / "app-worker.py").write_text(body)
    return Runner(root, 1000)


TAGS = 'print("<ElvesWFlag>true</ElvesWFlag><ElvesWResult>{{}}</ElvesWResult>".format({}))'


def test_the_forked_entry_runs_as_main_and_a_changed_one_runs_anew(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    body = "import sys\nV = __name__\n" + TAGS.format("sys.modules['__main__'].V")
    runner = _entry_app(tmp_path, body)
    runner.forkserver = forkserver
    script = tmp_path / "probe" / "app-worker.py"
    first = runner.run(spec("probe", "f"))
    assert (first.worker_flag, first.worker_message, first.forked) == (1, "__main__", True)
    # A new version of the entry (the server compiled the old one): the new one runs.
    script.write_text(TAGS.format("'version 2, ' + __file__.rsplit('/', 1)[-1]"))
    second = runner.run(spec("probe", "f"))
    assert (second.worker_flag, second.worker_message) == (1, "version 2, app-worker.py")


def test_a_forked_entry_that_does_not_compile_fails_the_task(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    runner = _entry_app(tmp_path, "def broken(:\n")
    runner.forkserver = forkserver
    result = runner.run(spec("probe", "f"))
    assert (result.worker_flag, result.forked) == (-1, True)
    assert "exit code 1" in result.worker_message and "SyntaxError" in result.worker_message


def test_a_forked_task_gets_the_agents_environment_or_the_one_it_is_given(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    body = "import os\n" + TAGS.format(
        "os.environ.get('PATH', '-') + ' ' + os.environ.get('ELVES_PROBE', '-')"
    )
    runner = _entry_app(tmp_path, body)
    runner.forkserver = forkserver
    # The agent's own environment, which the server has already: the server's is the task's.
    same = runner.run(spec("probe", "f"))
    assert (same.worker_flag, same.forked) == (1, True)
    assert same.worker_message == f"{os.environ.get('PATH', '-')} -"
    # Another one: the task gets exactly that, with nothing of the server's left over.
    runner.env = {"ELVES_PROBE": "42"}
    other = runner.run(spec("probe", "f"))
    assert (other.worker_flag, other.worker_message) == (1, "- 42")


def _sdk_app(root: Path, module: str) -> Runner:
    """An app `probe` on the SDK: the sample entry script, and `module` as probe.py."""
    (root / "probe").mkdir(exist_ok=True)
    entry = (SAMPLES / "apptest" / "app-worker.py").read_text()
    (root / "probe" / "app-worker.py").write_text(entry)
    (root / "probe" / "probe.py").write_text(module)
    return Runner(root, 4000)


def test_a_forked_sdk_task_runs_its_app_module_itself_and_a_changed_one_at_once(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    # The server compiles the module; the module's own code still runs in the task's process.
    module = (
        "import os\nIMPORTED_IN = os.getpid()\n\nclass probe:\n    def f(self, params):\n"
        "        return True, f'{VERSION} {IMPORTED_IN == os.getpid()}'\n"
    )
    runner = _sdk_app(tmp_path, "VERSION = 1\n" + module)
    runner.forkserver = forkserver
    first, second = runner.run(spec("probe", "f")), runner.run(spec("probe", "f"))
    assert (first.worker_flag, first.worker_message, first.forked) == (1, "1 True", True)
    assert (second.worker_flag, second.worker_message) == (1, "1 True")
    (tmp_path / "probe" / "probe.py").write_text("VERSION = 2\n" + module)
    assert runner.run(spec("probe", "f")).worker_message == "2 True"


def test_a_forked_sdk_tasks_traceback_names_its_app_module(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    module = "class probe:\n    def f(self, params):\n        raise ValueError('no')\n"
    runner = _sdk_app(tmp_path, module)
    runner.forkserver = forkserver
    result = runner.run(spec("probe", "f"))
    assert (result.worker_flag, result.forked) == (0, True)
    where = f'File "{tmp_path.resolve() / "probe" / "probe.py"}", line 3, in f'
    assert where in result.worker_message and "ValueError: no" in result.worker_message
    # A module that does not compile: the task's error, as a plain interpreter reports it.
    (tmp_path / "probe" / "probe.py").write_text("class probe(:\n")
    broken = runner.run(spec("probe", "f"))
    assert broken.worker_flag == 0 and "SyntaxError" in broken.worker_message


def test_the_fork_server_imports_no_module_that_taxes_every_fork() -> None:
    # `threading` and `logging` register fork handlers that run in every task's process.
    probe = "import sys, elves.agent.forkserver; print({'threading', 'logging'} & {*sys.modules})"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "set()"


PROBE_APP = """import json, os, sys


class probe:
    def look(self, params):
        spec = __spec__
        return "true", json.dumps({
            "name": __name__, "file": __file__, "package": __package__,
            "spec": [spec.name, spec.origin, spec.has_location, type(spec.loader).__name__],
            "loader": __loader__ is spec.loader, "path0": sys.path[0], "cwd": os.getcwd(),
            "argv": sys.argv[1:3], "params": params,
        })
"""


def test_a_forked_task_sees_its_app_as_a_fresh_interpreter_does(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    """Module attributes, sys.path and the app's folder, through a linked app folder too: the
    fork server resolves the folder once and skips the import machinery, and must not show."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "app-worker.py").write_text((SAMPLES / "noop" / "app-worker.py").read_text())
    (real / "probe.py").write_text(PROBE_APP)
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "probe").symlink_to(real)
    seen = []
    for server in (None, forkserver):
        result = Runner(apps, 10_000, forkserver=server).run(spec("probe", "look", {"k": "ü"}))
        assert (result.worker_flag, result.forked) == (1, server is not None), result
        seen.append(json.loads(result.worker_message))
    plain, forked = seen
    assert forked == plain
    resolved = str(real.resolve())
    assert plain["path0"] == resolved and plain["file"] == f"{resolved}/probe.py"
    assert plain["spec"] == ["probe", f"{resolved}/probe.py", True, "SourceFileLoader"]
    assert plain["params"] == {"k": "ü"}
