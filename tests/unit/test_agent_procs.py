"""A task's process named for good (pid, start time, boot), and killed only while it is that one."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from elves.agent.procs import identity, kill_group_if_same


def _gone(popen: subprocess.Popen[bytes]) -> bool:
    try:
        popen.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_process_is_named_by_its_boot_and_start_and_a_gone_one_not_at_all() -> None:
    mine = identity(os.getpid())
    assert mine is not None and mine == identity(os.getpid())
    boot, start = mine.rsplit(":", 1)
    assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert int(start) > 0
    popen = subprocess.Popen(["true"])
    popen.wait()
    assert identity(popen.pid) is None
    zombie = subprocess.Popen(["true"])
    try:
        for _ in range(500):  # until it has exited, unreaped
            if Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.01)
        assert identity(zombie.pid) is None
    finally:
        zombie.wait()


def test_a_command_with_spaces_and_parentheses_is_read_past(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "sys/kernel/random").mkdir(parents=True)
    (proc / "sys/kernel/random/boot_id").write_text("b00t\n")
    (proc / "7").mkdir()
    fields = ["S"] + [str(n) for n in range(4, 53)]  # fields 3.. ; the 22nd is "22"
    (proc / "7/stat").write_text("7 (a (b) c) " + " ".join(fields) + "\n")
    assert identity(7, proc) == "b00t:22"
    (proc / "7/stat").write_text("7 (a (b) c) Z " + " ".join(fields[1:]) + "\n")
    assert identity(7, proc) is None  # a zombie: it ended, whoever reaps it


def test_only_the_same_process_has_its_group_killed() -> None:
    popen = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        named = identity(popen.pid)
        assert named is not None
        boot, start = named.rsplit(":", 1)
        assert not kill_group_if_same(popen.pid, f"{boot}:{int(start) - 1}")  # a pid reused
        time.sleep(0.1)  # no event says a kill did not come: a SIGKILL sent lands well within
        assert popen.poll() is None
        assert kill_group_if_same(popen.pid, named)
        assert _gone(popen) and popen.returncode == -9
    finally:
        popen.kill()
        popen.wait()
