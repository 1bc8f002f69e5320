"""Sleeps, with a child process, so that a timeout must kill a whole process group.

`sleep` params: {"seconds": N, "pidfile": optional path where the child's pid is written,
"log": optional path of a file that gets one line per run (to count runs)}.
"""

import os
import subprocess


class sleeper:  # noqa: N801 - the contract: the class is named as the app
    def sleep(self, param: dict) -> tuple[str, str]:
        seconds = float(param.get("seconds", 1))
        if param.get("log"):
            with open(param["log"], "a") as f:
                f.write(f"{os.getpid()}\n")
        child = subprocess.Popen(["sleep", str(seconds)])
        pidfile = param.get("pidfile")
        if pidfile:
            tmp = f"{pidfile}.tmp"
            with open(tmp, "w") as f:
                f.write(str(child.pid))
            os.replace(tmp, pidfile)  # the reader never sees a half-written pid
        child.wait()
        return "true", f"slept {seconds:g}s"
