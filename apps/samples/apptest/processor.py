"""apptest's processor: the server side of its P-mode tasks, one JSON line per result.

The line goes to the file named by APPTEST_PROCESSOR_OUT (the tests set it), else to stdout.
"""

import json
import os


class apptest:  # noqa: N801 - the contract: the class is named as the app
    def helloword(self, task: dict, flag: int, result: str, costtime: int) -> None:
        line = json.dumps(
            {"task_id": task["task_id"], "flag": flag, "result": result, "costtime": costtime}
        )
        out = os.environ.get("APPTEST_PROCESSOR_OUT")
        if not out:
            print(line)
            return
        with open(out, "a", encoding="utf-8") as file:
            file.write(line + "\n")
