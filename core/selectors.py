"""Agent tags and tag selectors: parsed and matched here, and only here.

Tags are `key=value` pairs an agent announces (`ELVES_AGENT_TAGS=role=web,dc=bj`). A selector is
comma-separated terms that must all hold: `key=value` (the agent has that tag) or `key!=value`
(it does not: a missing key also passes). The gateway resolves instant tasks with it and the
cron fold its fires, so both agree on what a selector means. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from elves.errors import BadSelector

# Keys and values are plain words: letters, digits and `_ . - / :`; no spaces, commas or `=`.
_WORD = r"[A-Za-z0-9_.\-/:]+"
_TERM = re.compile(rf"^(?P<key>{_WORD})(?P<op>!=|=)(?P<value>{_WORD})$")


@dataclass(frozen=True)
class Term:
    key: str
    value: str
    negated: bool = False

    def holds(self, tags: Mapping[str, str]) -> bool:
        return (tags.get(self.key) == self.value) != self.negated

    def __str__(self) -> str:
        return f"{self.key}{'!=' if self.negated else '='}{self.value}"


@dataclass(frozen=True)
class Selector:
    terms: tuple[Term, ...]

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)


def _terms(text: str, what: str) -> list[re.Match[str]]:
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise BadSelector(f"{what} {text!r}: expected key=value terms separated by commas")
    matches = []
    for part in parts:
        match = _TERM.match(part)
        if match is None:
            raise BadSelector(
                f"{what} {text!r}: {part!r} is not key=value (letters, digits and _ . - / : only)"
            )
        matches.append(match)
    return matches


def parse_selector(text: str) -> Selector:
    """`role=web,dc!=bj` -> a Selector; anything else is a BadSelector (403.8)."""
    terms = tuple(
        Term(m["key"], m["value"], negated=m["op"] == "!=") for m in _terms(text, "selector")
    )
    return Selector(terms)


def parse_tags(text: str) -> dict[str, str]:
    """An agent's tags, `role=web,dc=bj`; "" is no tags. A key given twice is an error."""
    if not text.strip():
        return {}
    tags: dict[str, str] = {}
    for m in _terms(text, "tags"):
        if m["op"] != "=":
            raise BadSelector(f"tags {text!r}: a tag is key=value, not key!=value")
        if m["key"] in tags:
            raise BadSelector(f"tags {text!r}: {m['key']!r} is given twice")
        tags[m["key"]] = m["value"]
    return tags


def matches(selector: Selector, tags: Mapping[str, str]) -> bool:
    return all(term.holds(tags) for term in selector.terms)
