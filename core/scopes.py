"""What an API key may do: its scopes, parsed and checked here, and only here. Pure: no I/O.

A key names the apps it may use (names or `*`), the agents it may reach (agent ids, tag
selectors such as `role=web`, or `*`) and its operations (`exec`, `queue`, `cron`, `read`,
`admin`; `admin` includes the others). Every check answers with the reason of a refusal, or
None, so the gateway can say exactly why (401.6) and the rules are tested without a gateway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from elves.errors import MissingField, WrongType
from elves.selectors import Selector, matches, parse_selector

OPERATIONS = ("exec", "queue", "cron", "read", "admin")
ANY = "*"


@dataclass(frozen=True)
class Scopes:
    apps: tuple[str, ...]
    agents: tuple[str, ...]
    operations: tuple[str, ...]

    @property
    def everything(self) -> bool:
        """Every app and every agent: what raw SQL and key management need, since neither can
        be narrowed to an app or an agent."""
        return ANY in self.apps and ANY in self.agents

    def selectors(self) -> list[Selector]:
        return [parse_selector(a) for a in self.agents if _is_selector(a)]


def _is_selector(entry: str) -> bool:
    return "=" in entry  # agent ids never hold `=`; a selector always does


def _texts(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise WrongType(f"{name} must be a list of strings", field=name)
    items = tuple(dict.fromkeys(v.strip() for v in value))  # order kept, repeats dropped
    if not items or any(not v or " " in v for v in items):
        raise MissingField(f"{name}: give at least one, without spaces (`*`: all)", field=name)
    return items


def parse_scopes(apps: object, agents: object, operations: object) -> Scopes:
    """Scopes from a request or the CLI; a wrong one is refused before any key exists."""
    scopes = Scopes(
        _texts(apps, "apps"), _texts(agents, "agents"), _texts(operations, "operations")
    )
    unknown = [op for op in scopes.operations if op not in OPERATIONS]
    if unknown:
        raise WrongType(
            f"unknown operations {unknown}: choose from {', '.join(OPERATIONS)}",
            field="operations",
        )
    scopes.selectors()  # a selector that does not parse is a 403.8 now, not a refusal later
    return scopes


def denies_operation(scopes: Scopes, operation: str, everything: bool = False) -> str | None:
    if operation not in scopes.operations and "admin" not in scopes.operations:
        return f"the key may not {operation} (its operations: {', '.join(scopes.operations)})"
    if everything and not scopes.everything:
        return "this needs a key for every app and every agent (apps * and agents *)"
    return None


def denies_app(scopes: Scopes, app: str) -> str | None:
    if ANY in scopes.apps or app in scopes.apps:
        return None
    return f"the key may not use app {app}"


def denies_agent(scopes: Scopes, agent_id: str, tags: Mapping[str, str]) -> str | None:
    """An agent is reached by its id, or by a selector that its tags (the latest heartbeat's)
    match; an agent the gateway does not know has no tags."""
    if ANY in scopes.agents or agent_id in scopes.agents:
        return None
    if any(matches(s, tags) for s in scopes.selectors()):
        return None
    return f"the key may not reach agent {agent_id}"


def denies_agents(
    scopes: Scopes, agent_ids: Iterable[str], tags_of: Mapping[str, Mapping[str, str]]
) -> str | None:
    """Every agent a selector matched now must be in scope: a run is refused rather than quietly
    narrowed, so that it never runs on fewer agents than the caller asked for without a word."""
    outside = [a for a in agent_ids if denies_agent(scopes, a, tags_of.get(a, {}))]
    if not outside:
        return None
    return f"the key may not reach agents {', '.join(sorted(outside))}"


def denies_selector(scopes: Scopes, selector: str) -> str | None:
    """A standing selector (a cron's) matches agents that do not exist yet, so it is checked as
    text: it must hold every term of one of the key's selectors, which makes every agent it
    will ever match one that the key's selector matches too."""
    if ANY in scopes.agents:
        return None
    wanted = set(parse_selector(selector).terms)
    if any(set(s.terms) <= wanted for s in scopes.selectors()):
        return None
    return f"the key may not reach the agents of selector {selector}"
