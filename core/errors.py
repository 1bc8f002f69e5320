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


class Unauthorized(ElvesError):
    """A request that does not prove which API key sent it (401.x, ELVES' family; HTTP 401)."""

    code = "401.0"
    status = 401


class MissingSignature(Unauthorized):
    """A signing header is missing, or a nonce that is not 16-64 letters, digits, `-` or `_`."""

    code = "401.1"


class BadSignatureFormat(Unauthorized):
    """The signature is not 64 hex digits (ELVES: sign length)."""

    code = "401.4"


class BadSignature(Unauthorized):
    code = "401.5"


class NoPermission(ElvesError):
    """The key is valid, but its scopes do not reach this operation, app or agent."""

    code = "401.6"
    status = 403


class OutOfWindow(Unauthorized):
    """The request's timestamp is too far from the gateway's clock."""

    code = "401.7"


class BadTimestamp(Unauthorized):
    code = "401.8"


class UnknownKey(Unauthorized):
    """No such API key, or it was revoked."""

    code = "401.9"


class Replayed(Unauthorized):
    """The key already sent this nonce within the window: a replayed request."""

    code = "401.10"


class NotFound(ElvesError):
    code = "404.0"
    status = 404


class TaskNotFound(NotFound):
    code = "404.1"


class KeyNotFound(NotFound):
    code = "404.2"


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


class AppNotAllowed(ElvesError):
    """The app may not run on that agent: its permission rule (`elves app allow`) leaves the
    agent out (413.x: ELVES' supervisor family, which binds an app to its agents)."""

    code = "413.5"
    status = 403


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


class AgentNotAccepted(ElvesError):
    """The agent is registered but pending, or rejected: nothing is dispatched to it until an
    operator accepts it (`elves agent accept ID`)."""

    code = "414.4"
    status = 403


class DispatchRefusal(ElvesError):
    """An agent refuses a message on its dispatch topic (416.x): it does not act on it and
    reports a `DispatchRefused` on `security`. Never an HTTP answer; the status is nominal."""

    code = "416.0"
    status = 403


class DispatchUnsigned(DispatchRefusal):
    """Not a `SignedDispatch` the agent can read: a bare event, junk, or a broken envelope."""

    code = "416.1"


class DispatchForged(DispatchRefusal):
    """The signature does not verify with the center's key (another key, altered bytes)."""

    code = "416.2"


class DispatchWrongAgent(DispatchRefusal):
    """Signed, but for another agent (the claims or the inner event name another id)."""

    code = "416.3"


class DispatchExpired(DispatchRefusal):
    """Signed, but past its `expires_at` (a dispatch's deadline, a control message's TTL)."""

    code = "416.4"


class DispatchReplayed(DispatchRefusal):
    """The same signed bytes again at another offset: a replay, not Kafka's redelivery."""

    code = "416.5"


class DispatchAppNotAllowed(DispatchRefusal):
    """The app is not allowed on this agent (`ELVES_AGENT_APPS`)."""

    code = "416.6"


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
        if code == AppNotAllowed.code:
            self.status = AppNotAllowed.status
