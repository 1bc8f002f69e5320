"""The agent's cron file: parsing, defaults, ids, and bad entries skipped with their code."""

from __future__ import annotations

import json

import pytest

from elves.agent.cronfile import CronDef, config_cron_id, cron_from_set, parse_cron_file
from elves.errors import BadJson, BadRequest, BadRule, WrongType
from elves.schemas.events import AgentCronSet


def parse(entries: object) -> tuple[list[CronDef], list[tuple[int, str, str]]]:
    parsed = parse_cron_file(json.dumps(entries), "agent-1")
    return list(parsed.crons), [(p.index, p.name, p.code) for p in parsed.problems]


def test_an_entry_gets_its_id_from_the_agent_and_its_name_and_the_defaults() -> None:
    [cron], problems = parse(
        [{"name": "hello", "app": "apptest", "func": "helloword", "rule": "* * * * * *"}]
    )
    assert problems == []
    assert cron.cron_id == "agent-1/hello" == config_cron_id("agent-1", "hello")
    assert cron.source == "config"
    assert (cron.app, cron.func, cron.params) == ("apptest", "helloword", "{}")
    assert cron.rule.text == "* * * * * *" and cron.rule.seconds
    assert cron.rule.timezone == "UTC"
    assert cron.timeout_s == 90
    assert (cron.mode, cron.misfire, cron.overlap, cron.proxy) == ("AANP", "run_once", "skip", None)


def test_every_field_can_be_given() -> None:
    [cron], problems = parse(
        [
            {
                "name": "n",
                "app": "sleeper",
                "func": "sleep",
                "params": {"seconds": 1},
                "rule": "0 */5 * * *",
                "timezone": "Asia/Shanghai",
                "timeout": 2.5,
                "mode": "AAP",
                "misfire": "run_all",
                "overlap": "queue",
                "proxy": "python3|x.py",
            }
        ]
    )
    assert problems == []
    assert json.loads(cron.params) == {"seconds": 1}
    assert cron.rule.timezone == "Asia/Shanghai" and not cron.rule.seconds
    assert (cron.timeout_s, cron.mode, cron.misfire, cron.overlap) == (
        2.5,
        "AAP",
        "run_all",
        "queue",
    )
    assert cron.proxy == "python3|x.py"


GOOD = {"name": "ok", "app": "apptest", "func": "helloword", "rule": "*/2 * * * * *"}


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        ({**GOOD, "rule": "not a rule"}, "403.6"),
        ({**GOOD, "rule": "* * *"}, "403.6"),
        ({**GOOD, "timezone": "Mars/Olympus"}, "403.7"),
        ({k: v for k, v in GOOD.items() if k != "rule"}, "403.1"),
        ({k: v for k, v in GOOD.items() if k != "name"}, "403.1"),
        ({k: v for k, v in GOOD.items() if k != "app"}, "403.1"),
        ({**GOOD, "func": ""}, "403.1"),
        ({**GOOD, "mode": "CANP"}, "403.2"),
        ({**GOOD, "misfire": "sometimes"}, "403.2"),
        ({**GOOD, "overlap": "always"}, "403.2"),
        ({**GOOD, "params": [1, 2]}, "403.2"),
        ({**GOOD, "timeout": "90"}, "403.2"),
        ({**GOOD, "timeout": 0}, "403.2"),
        ({**GOOD, "timout": 5}, "403.2"),  # a misspelt field is not silently the default
        ({**GOOD, "app": 7}, "403.2"),
        ({**GOOD, "params": {"x": "y" * 70_000}}, "403.3"),
        ("not an object", "403.2"),
    ],
)
def test_a_bad_entry_is_skipped_with_its_code_and_the_others_stay(entry: object, code: str) -> None:
    other = {**GOOD, "name": "other"}
    crons, problems = parse([other, entry])
    assert [c.cron_id for c in crons] == ["agent-1/other"]
    name = entry.get("name", "") if isinstance(entry, dict) else ""
    assert problems == [(1, name, code)]


def test_a_duplicate_name_keeps_the_first_entry() -> None:
    crons, problems = parse([GOOD, {**GOOD, "func": "other"}])
    assert [(c.cron_id, c.func) for c in crons] == [("agent-1/ok", "helloword")]
    assert problems == [(1, "ok", "411.3")]


def test_a_file_that_is_not_json_or_not_a_list_is_refused_whole() -> None:
    with pytest.raises(BadJson) as bad:
        parse_cron_file('[{"name": ', "a")
    assert bad.value.code == "403.4"
    with pytest.raises(WrongType) as wrong:
        parse_cron_file('{"name": "x"}', "a")
    assert wrong.value.code == "403.2"
    assert parse_cron_file("[]", "a").crons == ()


def pushed(**changes: object) -> AgentCronSet:
    fields: dict[str, object] = {
        "event_id": "e1",
        "occurred_at": 1,
        "cron_id": "c-1",
        "agent_id": "agent-1",
        "app": "apptest",
        "func": "helloword",
        "params": '{"my": "x"}',
        "timeout_s": 30,
        "rule": "*/5 * * * * *",
        "timezone": "UTC",
        "mode": "AAP",
        "status": "active",
    }
    fields.update(changes)
    return AgentCronSet(**fields)  # type: ignore[arg-type]


def test_a_center_cron_keeps_the_centers_id_and_fields() -> None:
    cron = cron_from_set(pushed(overlap="parallel"))
    assert (cron.cron_id, cron.source, cron.mode, cron.overlap) == (
        "c-1",
        "center",
        "AAP",
        "parallel",
    )
    assert (cron.params, cron.timeout_s, cron.rule.text) == ('{"my": "x"}', 30, "*/5 * * * * *")
    assert cron_from_set(pushed(timeout_s=0), default_timeout_s=7).timeout_s == 7


@pytest.mark.parametrize(
    ("changes", "error"),
    [({"rule": "nope"}, BadRule), ({"mode": "CANP"}, WrongType), ({"misfire": "x"}, WrongType)],
)
def test_a_center_cron_that_cannot_run_is_refused(
    changes: dict[str, object], error: type[BadRequest]
) -> None:
    with pytest.raises(error):
        cron_from_set(pushed(**changes))


def test_the_schedule_names_what_the_times_depend_on() -> None:
    a = cron_from_set(pushed())
    assert a.schedule == cron_from_set(pushed(app="other", params="{}")).schedule
    assert a.schedule != cron_from_set(pushed(rule="*/6 * * * * *")).schedule
    assert a.schedule != cron_from_set(pushed(timezone="Europe/Berlin")).schedule
