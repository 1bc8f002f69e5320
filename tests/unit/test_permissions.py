"""App permissions without Kafka: the rule, its fold on `apps`, and each place that applies it."""

from __future__ import annotations

from pathlib import Path

import pytest

from elves import app_versions
from elves.agent.rollout import InstallFailed, Rollout
from elves.api.permissions import parse_rule
from elves.config import Settings
from elves.errors import BadSelector, MissingField, WrongType
from elves.permissions import ANYWHERE, NOWHERE, Rule, allowed, default_rule, make_rule, rule_of
from elves.schemas.codec import CODEC
from elves.schemas.events import AgentTagsSet, AppPermissionSet, AppVersionPublished
from elves.selectors import parse_selector
from elves.streams.app_rules import AppRules

T0 = 1_700_000_000_000
WEB_BJ = {"role": "web", "dc": "bj"}


def no_download(app: str, version: str) -> bytes:
    raise InstallFailed("these tests install nothing")


def rule_set(app: str = "demo", event_id: str = "p1", **kw: object) -> AppPermissionSet:
    return AppPermissionSet(event_id, T0, app, **kw)  # type: ignore[arg-type]


def test_an_agent_passes_by_its_id_or_by_one_matching_selector() -> None:
    rule = make_rule(["a1"], ["role=web,dc!=sh", "role=db"], anywhere=False)
    assert allowed(rule, "a1", {})  # listed: whatever its tags
    assert allowed(rule, "a2", WEB_BJ)
    assert allowed(rule, "a3", {"role": "db", "dc": "sh"})
    assert not allowed(rule, "a4", {"role": "web", "dc": "sh"})
    assert not allowed(rule, "a5", {})


def test_anywhere_allows_every_agent_and_an_empty_rule_none() -> None:
    assert allowed(ANYWHERE, "any", {}) and allowed(ANYWHERE, "any", WEB_BJ)
    assert not allowed(NOWHERE, "a1", WEB_BJ)
    assert make_rule([], [], anywhere=False) == NOWHERE


def test_the_default_is_allow_or_deny_and_nothing_else() -> None:
    assert default_rule("allow") == ANYWHERE
    assert default_rule("deny") == NOWHERE
    assert Settings().default_rule == ANYWHERE  # the sample apps run with no rule
    assert Settings(app_default="deny").default_rule == NOWHERE
    with pytest.raises(ValueError, match="allow or deny"):
        Settings(app_default="maybe")  # a process with a bad setting stops at its start


def test_make_rule_checks_its_parts_and_drops_repeats() -> None:
    rule = make_rule(["a1", "a1", "a2"], ["role=web", "role=web"], anywhere=False)
    assert rule.agents == ("a1", "a2")
    assert rule.selectors == (parse_selector("role=web"),)
    with pytest.raises(BadSelector):
        make_rule([], ["role"], anywhere=False)
    with pytest.raises(WrongType):
        make_rule([""], [], anywhere=False)
    with pytest.raises(WrongType):
        make_rule(["a1"], [], anywhere=True)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"anywhere": True}, ANYWHERE),
        ({"agents": ["a1"]}, Rule(agents=("a1",))),
        ({"selectors": ["role=web"]}, Rule(selectors=(parse_selector("role=web"),))),
        ({"agents": [], "selectors": []}, NOWHERE),
    ],
)
def test_a_request_body_becomes_a_rule(body: dict[str, object], expected: Rule) -> None:
    assert parse_rule(body) == expected


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, MissingField),
        ({"anywhere": False}, MissingField),
        ({"anywhere": "yes"}, WrongType),
        ({"agents": "a1"}, WrongType),
        ({"agents": [1]}, WrongType),
        ({"selectors": ["role"]}, BadSelector),
        ({"anywhere": True, "agents": ["a1"]}, WrongType),
    ],
)
def test_a_bad_request_body_has_its_code(body: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_rule(body)


def test_an_event_that_names_a_bad_selector_grants_less_not_more() -> None:
    rule = rule_of(rule_set(agents=("a1",), selectors=("role", "role=web")))
    assert rule.selectors == (parse_selector("role=web"),)
    assert not allowed(rule, "a2", {"role": "db"})


def test_the_apps_fold_keeps_the_newest_rule_beside_the_versions() -> None:
    published = AppVersionPublished("v1", T0, "demo", "1", "sha", 10, "app-worker.py")
    apps = app_versions.fold_all(
        [published, rule_set(agents=("a1",)), rule_set(app="other", anywhere=True)]
    )
    assert apps["demo"].permission == Rule(agents=("a1",))
    assert set(apps["demo"].versions) == {"1"}  # the rule changes nothing else
    assert apps["other"].versions == {}  # a rule may come before any package
    apps = app_versions.fold_all([rule_set(event_id="p2", anywhere=True)], apps)
    assert apps["demo"].permission == ANYWHERE  # a rule replaces the one before
    assert app_versions.to_json(apps["demo"])["permission"] == {
        "anywhere": True,
        "agents": [],
        "selectors": [],
    }


def test_an_app_with_no_rule_follows_the_default() -> None:
    apps = app_versions.fold_all([rule_set(app="ruled", agents=("a1",))])
    assert app_versions.permission(apps.get("free"), NOWHERE) == NOWHERE
    assert app_versions.permission(apps.get("free"), ANYWHERE) == ANYWHERE
    assert app_versions.permission(apps["ruled"], ANYWHERE) == Rule(agents=("a1",))


def test_the_streams_view_judges_by_the_rules_it_read() -> None:
    rules = AppRules(Settings())  # not started: fed by hand
    rules.apply(rule_set(selectors=("role=web",)))
    assert rules.allows("demo", "a1", WEB_BJ)
    assert not rules.allows("demo", "a1", {"role": "db"})
    assert rules.allows("free", "a1", {})  # no rule: the default, allow
    strict = AppRules(Settings(app_default="deny"))
    assert not strict.allows("free", "a1", WEB_BJ)
    strict.apply(rule_set(app="free", anywhere=True))
    assert strict.allows("free", "a1", WEB_BJ)


def test_the_agent_checks_an_app_by_its_own_fold_of_apps(tmp_path: Path) -> None:
    rollout = Rollout(Settings(state_dir=tmp_path), "a1", no_download, catch_up_wait_s=0)
    assert rollout.permits("demo", "a1", {})  # nothing read: the default
    rollout.apply(rule_set(agents=("a2",), selectors=("dc=bj",)))
    assert not rollout.permits("demo", "a1", {"dc": "sh"})
    assert rollout.permits("demo", "a1", {"dc": "bj"})
    assert rollout.permits("demo", "a2", {})
    denying = Rollout(
        Settings(state_dir=tmp_path, app_default="deny"), "a1", no_download, catch_up_wait_s=0
    )
    assert not denying.permits("demo", "a1", {})


def test_the_agent_lays_the_operators_tags_over_its_own_as_the_center_does(
    tmp_path: Path,
) -> None:
    rollout = Rollout(Settings(state_dir=tmp_path), "a1", no_download, catch_up_wait_s=0)
    rollout.apply(rule_set(selectors=("role=web",)))
    assert not rollout.permits("demo", "a1", {"role": "db"})
    rollout._enrolment(CODEC.encode(AgentTagsSet("t1", T0, "a2", {"role": "web"})))
    assert not rollout.permits("demo", "a1", {"role": "db"})  # another agent's tags
    rollout._enrolment(CODEC.encode(AgentTagsSet("t2", T0, "a1", {"role": "web"})))
    assert rollout.permits("demo", "a1", {"role": "db"})
