"""Misbehaves on purpose: the agent's -1 and 0 paths.

`crash` params: {"how": "exit" (default, os._exit) | "raise" (SystemExit), "code": N,
"stdout": text printed first}. `falsy` returns ("false", "nope"). `noisy` prints N bytes of
filler then the tags, for the output cap. `boom` raises an exception (false + traceback).
`flaky` params {"marker": path}: false the first time, true after (for retries).
"""

import os
import sys


class crasher:  # noqa: N801 - the contract: the class is named as the app
    def crash(self, param: dict) -> tuple[str, str]:
        sys.stdout.write(str(param.get("stdout", "")))
        sys.stdout.flush()
        sys.stderr.write("crasher: going down\n")
        sys.stderr.flush()
        code = int(param.get("code", 3))
        if param.get("how", "exit") == "raise":
            raise SystemExit(code)
        os._exit(code)

    def falsy(self, param: dict) -> tuple[str, str]:
        return "false", "nope"

    def noisy(self, param: dict) -> tuple[str, str]:
        return "true", "x" * int(param.get("bytes", 1000))

    def flaky(self, param: dict) -> tuple[str, str]:
        """False the first time (it leaves a marker file), true from then on: for retries."""
        marker = param["marker"]
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write("failed once")
            return "false", "first try fails"
        return "true", "second try works"

    def boom(self, param: dict) -> tuple[str, str]:
        raise RuntimeError("boom")
