"""A task's process named for good (pid, start time, boot), kept while it runs, and killed at the
agent's next start only while it is that one."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from elves.agent.procs import Left, Tracked, identity, kill_group_if_same


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


def test_the_processes_left_by_a_dead_agent_are_killed_once_and_the_ended_ones_not(
    tmp_path: Path,
) -> None:
    running = subprocess.Popen(["sleep", "60"], start_new_session=True)
    ended = subprocess.Popen(["sleep", "60"], start_new_session=True)
    removed = subprocess.Popen(["sleep", "60"], start_new_session=True)
    later = subprocess.Popen(["sleep", "60"], start_new_session=True)
    path = tmp_path / "processes"
    try:
        tracked = Tracked(path)
        tracked.add(running.pid, "t1", 2)
        tracked.add(ended.pid, "t2", 1)
        tracked.add(removed.pid, "t3", 1)
        tracked.remove(removed.pid)  # its task ended: it is not the next start's to kill
        tracked.add(later.pid, "t4", 1)  # in the place `removed` left
        ended.kill()  # as if its process had ended when the agent died
        ended.wait()
        assert path.stat().st_size == 3 * Tracked.RECORD
        tracked.close()  # the agent dies

        again = Tracked(path)  # its next start
        left = again.kill_left()

        assert left == {
            ("t1", 2): Left(running.pid, True),
            ("t2", 1): Left(ended.pid, False),
            ("t4", 1): Left(later.pid, True),
        }
        assert _gone(running) and running.returncode == -9
        assert _gone(later) and later.returncode == -9
        assert removed.poll() is None
        assert path.stat().st_size == 0
        assert again.kill_left() == {}
        again.close()
    finally:
        for popen in (running, removed, later):
            popen.kill()
            popen.wait()


def test_a_process_ended_before_it_is_kept_or_a_broken_record_leaves_nothing_to_kill(
    tmp_path: Path,
) -> None:
    popen = subprocess.Popen(["true"])
    popen.wait()
    tracked = Tracked(tmp_path / "processes")
    tracked.add(popen.pid, "t1", 1)
    tracked.remove(popen.pid)
    assert (tmp_path / "processes").stat().st_size == 0
    (tmp_path / "processes").write_bytes(b"not a record".ljust(Tracked.RECORD, b"\0"))
    assert tracked.kill_left() == {}
    tracked.close()


def test_a_record_that_cannot_be_written_leaves_the_task_to_run() -> None:
    popen = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        tracked = Tracked(Path("/dev/full"))  # every write fails with ENOSPC, as on a full disk
        tracked.add(popen.pid, "t1", 1)
        tracked.remove(popen.pid)
        tracked.close()
        assert popen.poll() is None
    finally:
        popen.kill()
        popen.wait()
