"""Tags and selectors: what parses, what matches, and the stable code of what does not."""

from __future__ import annotations

import pytest

from elves.config import Settings
from elves.errors import BadSelector
from elves.selectors import matches, parse_selector, parse_tags

WEB_BJ = {"role": "web", "dc": "bj"}


@pytest.mark.parametrize(
    ("selector", "tags", "expected"),
    [
        ("role=web", WEB_BJ, True),
        ("role=web,dc=bj", WEB_BJ, True),
        ("role=web, dc=sh", WEB_BJ, False),  # every term must hold
        ("role=db", WEB_BJ, False),
        ("role=web,dc!=sh", WEB_BJ, True),
        ("dc!=bj", WEB_BJ, False),
        ("rack!=r1", WEB_BJ, True),  # a missing key is not equal to anything
        ("role=web", {}, False),
    ],
)
def test_a_selector_matches_when_every_term_holds(
    selector: str, tags: dict[str, str], expected: bool
) -> None:
    assert matches(parse_selector(selector), tags) is expected


@pytest.mark.parametrize(
    "text", ["", " ", "role", "role=", "=web", "role=web,", ",role=web", "role==web", "a b=c"]
)
def test_a_malformed_selector_is_403_8(text: str) -> None:
    with pytest.raises(BadSelector) as err:
        parse_selector(text)
    assert err.value.code == "403.8"
    assert err.value.status == 400


def test_a_selector_prints_as_it_parses() -> None:
    assert str(parse_selector(" role=web ,dc!=bj")) == "role=web,dc!=bj"


def test_tags_parse_to_a_mapping() -> None:
    assert parse_tags("role=web,dc=bj") == WEB_BJ
    assert parse_tags("") == {}


@pytest.mark.parametrize("text", ["role", "role!=web", "role=web,role=db", "role=web,,"])
def test_bad_tags_are_refused(text: str) -> None:
    with pytest.raises(BadSelector):
        parse_tags(text)


def test_the_agent_tags_setting() -> None:
    assert Settings.from_env({"ELVES_AGENT_TAGS": "role=web,dc=bj"}).tags == WEB_BJ
    assert Settings.from_env({}).tags == {}
    with pytest.raises(BadSelector, match="ELVES|tags"):
        _ = Settings.from_env({"ELVES_AGENT_TAGS": "role web"}).tags


def test_an_agent_with_bad_tags_does_not_start(caplog: pytest.LogCaptureFixture) -> None:
    from elves.agent.daemon import main

    assert main(Settings(agent_tags="role web")) == 2  # before any thread or Kafka client
    assert "ELVES_AGENT_TAGS" in caplog.text and "'role web'" in caplog.text
