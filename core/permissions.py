"""Which agents an app may run on: the rule, and the one function that applies it.

ELVES' supervisor binds an app to a list of agents. Here a rule names agent ids and/or tag
selectors (`role=web,dc!=bj`, see `selectors.py`), or says anywhere; an agent passes if its id is
listed or one selector matches its tags. An app with no rule follows the center's default
(`ELVES_APP_DEFAULT`). The rule travels as `AppPermissionSet` on `apps`, so the gateway, every
streams worker and every agent fold the same log and judge alike. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from elves.errors import BadSelector, WrongType
from elves.schemas.events import AppPermissionSet
from elves.selectors import Selector, matches, parse_selector

# (app, agent id) -> may the app run there: what the folds are handed, so they stay pure.
Permits = Callable[[str, str], bool]


@dataclass(frozen=True)
class Rule:
    agents: tuple[str, ...] = ()
    selectors: tuple[Selector, ...] = ()
    anywhere: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "anywhere": self.anywhere,
            "agents": list(self.agents),
            "selectors": [str(s) for s in self.selectors],
        }


ANYWHERE = Rule(anywhere=True)
NOWHERE = Rule()
DEFAULTS = {"allow": ANYWHERE, "deny": NOWHERE}


def default_rule(name: str) -> Rule:
    """The rule of an app that has none: `allow` (anywhere) or `deny` (nowhere)."""
    rule = DEFAULTS.get(name)
    if rule is None:
        raise ValueError(f"ELVES_APP_DEFAULT must be allow or deny, not {name!r}")
    return rule


def allowed(rule: Rule, agent_id: str, tags: Mapping[str, str]) -> bool:
    """May an app with this rule run on this agent, which has these (effective) tags?"""
    if rule.anywhere or agent_id in rule.agents:
        return True
    return any(matches(selector, tags) for selector in rule.selectors)


def anywhere(app: str, agent_id: str) -> bool:
    """The `Permits` of a fold that is handed none: every app anywhere."""
    return True


def make_rule(agents: Iterable[str], selectors: Iterable[str], anywhere: bool) -> Rule:
    """A rule from its parts, checked: a selector that does not parse is a BadSelector (403.8),
    an empty agent id a WrongType (403.2). Repeats are dropped; the order is kept."""
    ids = tuple(dict.fromkeys(agents))
    if any(not a for a in ids):
        raise WrongType("an agent id is a non-empty string", field="agents")
    parsed = tuple(dict.fromkeys(parse_selector(s) for s in selectors))
    if anywhere and (ids or parsed):
        raise WrongType("anywhere takes no agents or selectors", field="anywhere")
    return Rule(ids, parsed, anywhere)


def rule_of(event: AppPermissionSet) -> Rule:
    """The rule an event sets. A selector that does not parse (a producer other than the
    gateway) is left out: it matches nothing, so the rule only ever grants less."""
    selectors = []
    for text in event.selectors:
        try:
            selectors.append(parse_selector(text))
        except BadSelector:
            continue
    return Rule(tuple(event.agents), tuple(selectors), event.anywhere)
