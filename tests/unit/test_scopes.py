"""Scopes: what parses, and what a key may reach (pure)."""

from __future__ import annotations

import pytest

from elves.errors import ElvesError
from elves.scopes import (
    Scopes,
    denies_agent,
    denies_agents,
    denies_app,
    denies_operation,
    denies_selector,
    parse_scopes,
)

WEB = Scopes(apps=("apptest",), agents=("role=web", "host-9"), operations=("exec", "read"))
ALL = Scopes(apps=("*",), agents=("*",), operations=("read",))


def test_scopes_parse_from_lists_and_single_strings() -> None:
    scopes = parse_scopes("apptest", ["role=web,dc=bj", "host-1"], ["exec", "exec", "read"])
    assert scopes == Scopes(("apptest",), ("role=web,dc=bj", "host-1"), ("exec", "read"))


@pytest.mark.parametrize(
    ("apps", "agents", "operations", "code"),
    [
        (None, ["*"], ["read"], "403.2"),
        ([], ["*"], ["read"], "403.1"),
        (["a b"], ["*"], ["read"], "403.1"),
        (["*"], ["*"], ["fly"], "403.2"),
        (["*"], ["role=="], ["read"], "403.8"),
        (["*"], ["*"], [1], "403.2"),
    ],
)
def test_bad_scopes_are_refused_with_a_code(
    apps: object, agents: object, operations: object, code: str
) -> None:
    with pytest.raises(ElvesError) as err:
        parse_scopes(apps, agents, operations)
    assert err.value.code == code


def test_admin_includes_every_operation() -> None:
    admin = Scopes(("*",), ("*",), ("admin",))
    assert all(denies_operation(admin, op) is None for op in ("exec", "queue", "cron", "read"))
    assert denies_operation(WEB, "exec") is None
    assert denies_operation(WEB, "queue") == "the key may not queue (its operations: exec, read)"
    assert denies_operation(WEB, "admin") is not None


def test_everything_needs_every_app_and_agent() -> None:
    assert denies_operation(ALL, "read", everything=True) is None
    assert denies_operation(WEB, "read", everything=True) is not None
    one_app = Scopes(("apptest",), ("*",), ("admin",))
    assert denies_operation(one_app, "admin", everything=True) is not None


def test_apps() -> None:
    assert denies_app(WEB, "apptest") is None
    assert denies_app(WEB, "sleeper") == "the key may not use app sleeper"
    assert denies_app(ALL, "sleeper") is None


def test_an_agent_is_reached_by_id_or_by_its_tags() -> None:
    assert denies_agent(WEB, "host-9", {}) is None
    assert denies_agent(WEB, "host-1", {"role": "web"}) is None
    assert denies_agent(WEB, "host-2", {"role": "db"}) == "the key may not reach agent host-2"
    assert denies_agent(WEB, "unknown", {}) is not None
    assert denies_agent(ALL, "anyone", {}) is None


def test_every_agent_a_selector_matched_must_be_in_scope() -> None:
    tags = {"w1": {"role": "web"}, "d1": {"role": "db"}, "d2": {"role": "db"}}
    assert denies_agents(WEB, ["w1", "host-9"], tags) is None
    assert denies_agents(WEB, ["w1", "d2", "d1"], tags) == "the key may not reach agents d1, d2"


@pytest.mark.parametrize(
    ("selector", "allowed"),
    [
        ("role=web", True),
        ("role=web,dc=bj", True),  # narrower than the key's: every match is a web agent
        ("dc=bj", False),  # may match db agents
        ("role!=db", False),
    ],
)
def test_a_standing_selector_must_be_as_narrow_as_one_of_the_keys(
    selector: str, allowed: bool
) -> None:
    assert (denies_selector(WEB, selector) is None) is allowed
    assert denies_selector(ALL, selector) is None
    ids_only = Scopes(("*",), ("host-1",), ("cron",))
    assert denies_selector(ids_only, selector) is not None
