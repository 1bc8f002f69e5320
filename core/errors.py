"""Every error a user can cause, with a stable code.

Codes follow ELVES' families where one exists (403.x bad parameter, 414.1 agent offline, ...), so
that people who know ELVES recognise them; new ones are named in the same style.
"""

from __future__ import annotations


class ElvesError(Exception):
    """Base of every Elves error: a stable `code`, an HTTP status and whether a retry may help."""

    code = "500"
    status = 500
    retriable = False

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, **self.details}


class BadRequest(ElvesError):
    code = "403.0"
    status = 400


class MissingField(BadRequest):
    code = "403.1"


class WrongType(BadRequest):
    code = "403.2"


class ParamsTooLarge(BadRequest):
    code = "403.3"
    status = 413


class BadJson(BadRequest):
    code = "403.4"


class BadSql(BadRequest):
    code = "403.5"


class BadRule(BadRequest):
    """A cron rule that cannot be read, or that never fires."""

    code = "403.6"


class BadTimezone(BadRequest):
    """A time zone that is not an IANA name, e.g. "Asia/Shanghai"."""

    code = "403.7"


class BadSelector(BadRequest):
    """A tag selector (`role=web,dc!=bj`) or an agent's tags that do not parse."""

    code = "403.8"


class NotFound(ElvesError):
    code = "404.0"
    status = 404


class TaskNotFound(NotFound):
    code = "404.1"


class CronNotFound(NotFound):
    code = "411.1"  # ELVES' code for it


class BadPackage(BadRequest):
    """An app package that is not a safe, well-formed zip with a manifest (413.x: supervisor)."""

    code = "413.2"


class PackageTooLarge(BadPackage):
    """The package is over `ELVES_MAX_PACKAGE`; same code, HTTP 413."""

    status = 413


class UnknownAppVersion(NotFound):
    """No such app, or no such published version of it."""

    code = "413.3"


class VersionTaken(ElvesError):
    """The version was published before with other content: a version never changes."""

    code = "413.4"
    status = 409


class UnknownAgent(ElvesError):
    code = "414.2"
    status = 404


class NoAgentMatches(ElvesError):
    """No agent that is up carries the tags a selector asks for."""

    code = "414.3"
    status = 404


class AgentOffline(ElvesError):
    code = "414.1"
    status = 409


class TaskTimeout(ElvesError):
    """The instant call waited its whole timeout; the task goes on and can be looked up by id."""

    code = "408.1"
    status = 504
    retriable = True


class DecodeError(ElvesError):
    """A message on a topic that is not a known event: it goes to the dead-letter topic."""

    code = "422.1"
    status = 422


class Unavailable(ElvesError):
    code = "503.1"
    status = 503
    retriable = True


class CommandRejected(ElvesError):
    """The streams refused a command; the code is theirs (e.g. 412.5 a dependency cycle)."""

    def __init__(self, code: str, message: str, **details: object) -> None:
        super().__init__(message, **details)
        self.code = code
        family = code.split(".")[0]
        self.status = {"411": 409, "412": 409, "403": 400}.get(family, 400)
        if code in ("411.1", "412.1"):  # no such cron / queue
            self.status = 404
