"""ELVES' own example app: `helloword` returns the value of `my`."""


class apptest:  # noqa: N801 - the contract: the class is named as the app
    def helloword(self, param: dict) -> tuple[str, str]:
        return "true", str(param.get("my", ""))
