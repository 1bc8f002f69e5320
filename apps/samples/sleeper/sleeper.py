"""Sleeps, with a child process, so that a timeout must kill a whole process group.

`sleep` params: {"seconds": N, "pidfile": optional path where the child's pid is written,
"log": optional path of a file that gets one line per run (to count runs)}.
`tick` params: {"n": N, "every": seconds, "stamp": false}: prints `tick i` N times, one each
`every` seconds (with `stamp`, followed by the Unix time it was printed at), and `half way` on
stderr half way: output that the agent streams while the task runs.
"""

import os
import subprocess
import sys
import time


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

    def tick(self, param: dict) -> tuple[str, str]:
        n, every = int(param.get("n", 3)), float(param.get("every", 1))
        stamp = bool(param.get("stamp"))
        for i in range(1, n + 1):
            print(f"tick {i} {time.time():.6f}" if stamp else f"tick {i}")
            if i == n // 2:
                print("half way", file=sys.stderr)
            if i < n:
                time.sleep(every)
        return "true", f"ticked {n} times"
