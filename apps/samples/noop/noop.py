"""Does nothing: the floor of a task's cost (benchmarks)."""


class noop:  # noqa: N801 - the contract: the class is named as the app
    def noop(self, param: dict) -> tuple[str, str]:
        return "true", ""
