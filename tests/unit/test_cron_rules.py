"""Cron rules: syntax, time zones across daylight saving, catch-up windows and misfire plans."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from elves.errors import BadRule, BadTimezone
from elves.streams.cron.rules import (
    MISFIRE_POLICIES,
    OVERLAP_POLICIES,
    FirePlan,
    Rule,
    fires_between,
    next_fire,
    next_fires,
    parse_rule,
    plan_fires,
)

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3_600_000


def ms(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    tz: ZoneInfo | None = None,
    fold: int = 0,
) -> int:
    """Unix ms of a wall-clock time, UTC unless `tz`; fold=1 is a repeated hour's second pass."""
    moment = datetime(year, month, day, hour, minute, second, tzinfo=tz or UTC, fold=fold)
    return round(moment.timestamp() * 1000)


# --- syntax ---


def test_five_fields_are_plain_cron() -> None:
    rule = parse_rule("0 9 * * *")
    assert rule == Rule(text="0 9 * * *", expression="0 9 * * *", timezone="UTC", seconds=False)
    assert next_fires(rule, ms(2024, 1, 1), 3) == [
        ms(2024, 1, 1, 9),
        ms(2024, 1, 2, 9),
        ms(2024, 1, 3, 9),
    ]


def test_six_fields_put_seconds_first() -> None:
    rule = parse_rule("*/10 * * * * *")
    assert rule.seconds
    assert rule.expression == "* * * * * */10"  # croniter's own order: seconds last
    assert next_fires(rule, ms(2024, 1, 1, 11, 59, 59), 3) == [
        ms(2024, 1, 1, 12, 0, 0),
        ms(2024, 1, 1, 12, 0, 10),
        ms(2024, 1, 1, 12, 0, 20),
    ]
    # second 5 of minute 0 of every hour; seconds last would read it as minute 5, second 0
    assert next_fire(parse_rule("5 0 * * * *"), ms(2024, 1, 1, 12, 1)) == ms(2024, 1, 1, 13, 0, 5)


def test_next_fire_is_strictly_after_a_time_between_seconds() -> None:
    rule = parse_rule("* * * * * *")
    assert next_fire(rule, ms(2024, 1, 1, 12) - 1) == ms(2024, 1, 1, 12)
    assert next_fire(rule, ms(2024, 1, 1, 12)) == ms(2024, 1, 1, 12, 0, 1)
    assert next_fire(rule, ms(2024, 1, 1, 12) + 500) == ms(2024, 1, 1, 12, 0, 1)


def test_quartz_every_five_seconds() -> None:
    rule = parse_rule("0/5 * * * * ?")
    assert rule.expression == "* * * * * 0/5"
    assert next_fires(rule, ms(2024, 1, 1, 12, 0, 1), 3) == [
        ms(2024, 1, 1, 12, 0, 5),
        ms(2024, 1, 1, 12, 0, 10),
        ms(2024, 1, 1, 12, 0, 15),
    ]


def test_quartz_day_of_week_one_is_sunday() -> None:
    sundays = next_fires(parse_rule("0 0 12 ? * 1"), ms(2024, 1, 1), 2)  # 2024-01-01 is a Monday
    assert sundays == [ms(2024, 1, 7, 12), ms(2024, 1, 14, 12)]
    # without ? or a year the rule is not Quartz style: cron's numbers, 1 = Monday
    assert next_fire(parse_rule("0 0 12 * * 1"), ms(2024, 1, 1)) == ms(2024, 1, 1, 12)


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("0 0 12 ? * 2-6", "0 12 * * 1-5 0"),
        ("0 0 12 ? * 1,7", "0 12 * * 0,6 0"),
        ("0 0 12 ? * 6L", "0 12 * * L5 0"),
        ("0 0 12 ? * 2#3", "0 12 * * 1#3 0"),
        ("0 0 12 ? * 1/2", "0 12 * * 0/2 0"),
        ("0 0 12 ? * MON-FRI", "0 12 * * MON-FRI 0"),
        ("0 0 12 15 * ?", "0 12 15 * * 0"),
        ("0 0 12 * * 1 *", "0 12 * * 0 0"),  # 7 fields is Quartz too
        ("0 0 12 ? * * ?", "0 12 * * * 0"),
    ],
)
def test_quartz_rules_become_croniter_expressions(text: str, expression: str) -> None:
    assert parse_rule(text).expression == expression


def test_quartz_last_friday_and_third_monday() -> None:
    assert next_fire(parse_rule("0 0 12 ? * 6L"), ms(2024, 1, 1)) == ms(2024, 1, 26, 12)
    assert next_fire(parse_rule("0 0 12 ? * 2#3"), ms(2024, 1, 1)) == ms(2024, 1, 15, 12)


def test_mon_fri_skips_the_weekend() -> None:
    friday_evening = ms(2024, 1, 5, 10)
    expected = [ms(2024, 1, 8, 9), ms(2024, 1, 9, 9)]
    assert next_fires(parse_rule("0 9 * * MON-FRI"), friday_evening, 2) == expected
    assert next_fires(parse_rule("0 0 9 ? * MON-FRI"), friday_evening, 2) == expected


def test_an_alias_is_read_as_croniter_reads_it() -> None:
    assert next_fire(parse_rule("@daily"), ms(2024, 1, 1, 5)) == ms(2024, 1, 2)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("* * *", "has 3 fields"),
        ("* * * * * * * *", "has 8 fields"),
        ("61 * * * *", "not valid"),
        ("0 0 * * 8", "not valid"),
        ("a b c d e", "not valid"),
        ("*/0 * * * *", "not valid"),
        ("0 0 LW * *", "not valid"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4 *", "never fires"),
        ("0 0 12 * * ? 2025", "years are not supported"),
        ("R * * * *", "random"),
        ("H * * * *", "hashed"),
        ("0 ? * * *", "? (no specific value) may only be"),
        ("0 0 12 1? * *", "? (no specific value) may only be"),
        ("0 0 12 ? * 0", "Quartz day-of-week is 1-7"),
        ("0 0 12 ? * 8", "Quartz day-of-week is 1-7"),
    ],
)
def test_a_bad_rule_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(BadRule) as raised:
        parse_rule(text)
    assert raised.value.code == "403.6"
    assert says in raised.value.message
    assert raised.value.to_dict()["rule"] == text


@pytest.mark.parametrize("timezone", ["", "Mars/Olympus_Mons", "Europe", "../etc/passwd", "utc"])
def test_a_bad_timezone_is_403_7(timezone: str) -> None:
    with pytest.raises(BadTimezone) as raised:
        parse_rule("0 9 * * *", timezone)
    assert raised.value.code == "403.7"
    assert "time zone" in raised.value.message


# --- time zones ---


def test_a_rule_follows_the_wall_clock_of_its_zone() -> None:
    shanghai = parse_rule("0 9 * * *", "Asia/Shanghai")
    assert next_fire(shanghai, ms(2024, 1, 1)) == ms(2024, 1, 1, 1)  # 09:00 +08:00
    assert next_fire(parse_rule("0 9 * * *"), ms(2024, 1, 1)) == ms(2024, 1, 1, 9)


def test_spring_forward_fires_once_at_the_end_of_the_gap() -> None:
    rule = parse_rule("30 2 * * *", "Europe/Berlin")  # 2024-03-31 02:00-02:59 does not exist
    assert next_fires(rule, ms(2024, 3, 30, 12, tz=BERLIN), 3) == [
        ms(2024, 3, 31, 1),  # 03:00 summer time, the first instant after the gap
        ms(2024, 4, 1, 2, 30, tz=BERLIN),
        ms(2024, 4, 2, 2, 30, tz=BERLIN),
    ]


def test_spring_forward_day_has_23_hourly_fires() -> None:
    day = fires_between(
        parse_rule("0 * * * *", "Europe/Berlin"),
        ms(2024, 3, 31, tz=BERLIN) - 1,
        ms(2024, 4, 1, tz=BERLIN) - 1,
        100,
    )
    assert day == [ms(2024, 3, 30, 23) + h * HOUR for h in range(23)]


def test_fall_back_fires_a_fixed_time_once() -> None:
    rule = parse_rule("30 2 * * *", "Europe/Berlin")  # 2024-10-27 02:00-02:59 happens twice
    assert next_fires(rule, ms(2024, 10, 26, 12, tz=BERLIN), 3) == [
        ms(2024, 10, 27, 0, 30),  # 02:30 summer time, the first pass
        ms(2024, 10, 28, 1, 30),  # 02:30 winter time the next day
        ms(2024, 10, 29, 1, 30),
    ]
    second_pass = ms(2024, 10, 27, 2, 0, tz=BERLIN, fold=1)
    assert next_fire(rule, second_pass) == ms(2024, 10, 28, 1, 30)


def test_fall_back_day_has_25_hourly_fires() -> None:
    day = fires_between(
        parse_rule("0 * * * *", "Europe/Berlin"),
        ms(2024, 10, 27, tz=BERLIN) - 1,
        ms(2024, 10, 28, tz=BERLIN) - 1,
        100,
    )
    assert day == [ms(2024, 10, 26, 22) + h * HOUR for h in range(25)]
    assert len(set(day)) == 25


def test_a_sub_hourly_rule_runs_on_elapsed_time_through_the_repeated_hour() -> None:
    rule = parse_rule("*/20 * * * *", "Europe/Berlin")
    fires = next_fires(rule, ms(2024, 10, 26, 23, 30), 8)
    assert fires == [ms(2024, 10, 26, 23, 40) + k * 20 * 60_000 for k in range(8)]


@pytest.mark.parametrize(
    ("timezone", "change"),
    [
        ("Europe/Berlin", ms(2024, 3, 31, 1)),  # an hour forward
        ("Europe/Berlin", ms(2024, 10, 27, 1)),  # an hour back
        ("Australia/Lord_Howe", ms(2024, 4, 6, 15)),  # half an hour back
        ("Australia/Lord_Howe", ms(2024, 10, 5, 15, 30)),  # half an hour forward
    ],
)
def test_next_fire_never_repeats_or_goes_back(timezone: str, change: int) -> None:
    for text in ("*/7 * * * * *", "0 * * * *", "30 2 * * *", "*/20 * * * *", "15,45 1-3 * * *"):
        rule = parse_rule(text, timezone)
        after = change - 2 * HOUR
        while after < change + 2 * HOUR:
            fire = next_fire(rule, after)
            assert fire > after
            assert next_fire(rule, fire - 1) == fire
            assert next_fire(rule, after + (fire - after) // 2) == fire
            after = fire


# --- catch-up windows ---


def test_fires_between_excludes_after_and_includes_until() -> None:
    rule = parse_rule("0 * * * *")
    assert fires_between(rule, ms(2024, 1, 1, 1), ms(2024, 1, 1, 3), 10) == [
        ms(2024, 1, 1, 2),
        ms(2024, 1, 1, 3),
    ]


def test_fires_between_keeps_the_newest_when_over_the_limit() -> None:
    rule = parse_rule("* * * * * *")
    fires = fires_between(rule, ms(2024, 1, 1), ms(2024, 1, 2), 3)  # 86,400 in the window
    assert fires == [ms(2024, 1, 1, 23, 59, 58), ms(2024, 1, 1, 23, 59, 59), ms(2024, 1, 2)]
    sparse = fires_between(parse_rule("0 9 * * *"), ms(2023, 1, 1), ms(2024, 1, 1), 2)
    assert sparse == [ms(2023, 12, 30, 9), ms(2023, 12, 31, 9)]


def test_fires_between_returns_all_under_the_limit_and_nothing_for_an_empty_window() -> None:
    rule = parse_rule("0 9 * * *")
    assert fires_between(rule, ms(2024, 1, 1), ms(2024, 1, 4), 100) == [
        ms(2024, 1, 1, 9),
        ms(2024, 1, 2, 9),
        ms(2024, 1, 3, 9),
    ]
    assert fires_between(rule, ms(2024, 1, 1, 10), ms(2024, 1, 2, 8), 100) == []
    assert fires_between(rule, ms(2024, 1, 4), ms(2024, 1, 1), 100) == []
    assert fires_between(rule, ms(2024, 1, 1), ms(2024, 1, 4), 0) == []


# --- misfire plans ---

NOW = 1_000_000


def test_policy_names() -> None:
    assert MISFIRE_POLICIES == ("run_once", "run_all", "skip")
    assert OVERLAP_POLICIES == ("skip", "queue", "parallel")


def test_nothing_due_plans_nothing() -> None:
    for policy in ("run_once", "run_all", "skip"):
        assert plan_fires([], NOW, policy, 5_000) == FirePlan(run=(), missed=())


def test_on_time_is_the_newest_within_grace() -> None:
    assert plan_fires([NOW - 5_000], NOW, "skip", 5_000).run == ((NOW - 5_000, False),)
    late = plan_fires([NOW - 5_001], NOW, "skip", 5_000)
    assert late == FirePlan(run=(), missed=(NOW - 5_001,))


def test_skip_runs_only_the_on_time_one() -> None:
    due = [NOW - 3_000, NOW - 2_000, NOW - 1_000]
    assert plan_fires(due, NOW, "skip", 1_500) == FirePlan(
        run=((NOW - 1_000, False),), missed=(NOW - 3_000, NOW - 2_000)
    )


def test_run_once_runs_an_on_time_fire_as_is() -> None:
    assert plan_fires([NOW - 100], NOW, "run_once", 500) == FirePlan(
        run=((NOW - 100, False),), missed=()
    )


def test_run_once_after_ten_seconds_down_runs_once() -> None:
    due = [NOW - k * 1_000 for k in range(9, -1, -1)]  # a per-second rule, the last one is now
    plan = plan_fires(due, NOW, "run_once", 500)
    assert plan.run == ((NOW, True),)  # the missed ones collapse into the newest
    assert plan.missed == tuple(NOW - k * 1_000 for k in range(9, 0, -1))


def test_run_once_catches_up_a_daily_job_that_was_down_at_its_time() -> None:
    plan = plan_fires([NOW - 3 * HOUR], NOW, "run_once", 60_000)
    assert plan == FirePlan(run=((NOW - 3 * HOUR, True),), missed=())


def test_run_all_runs_every_due_time_up_to_the_catch_up_limit() -> None:
    due = [NOW - 4_000, NOW - 3_000, NOW - 2_000, NOW]
    assert plan_fires(due, NOW, "run_all", 0) == FirePlan(
        run=((NOW - 4_000, True), (NOW - 3_000, True), (NOW - 2_000, True), (NOW, False)),
        missed=(),
    )
    assert plan_fires(due, NOW, "run_all", 0, max_catch_up=2) == FirePlan(
        run=((NOW - 3_000, True), (NOW - 2_000, True), (NOW, False)), missed=(NOW - 4_000,)
    )
    assert plan_fires(due[:-1], NOW, "run_all", 0, max_catch_up=0) == FirePlan(
        run=(), missed=(NOW - 4_000, NOW - 3_000, NOW - 2_000)
    )


def test_plan_fires_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown misfire policy"):
        plan_fires([NOW], NOW, "sometimes", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strictly increasing"):
        plan_fires([NOW, NOW - 1], NOW, "skip", 0)
    with pytest.raises(ValueError, match="strictly increasing"):
        plan_fires([NOW + 1], NOW, "skip", 0)
