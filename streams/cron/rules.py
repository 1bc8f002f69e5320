"""Cron rules: read a rule once, then ask when it fires, in UTC milliseconds; no clock, no I/O.

Syntax (croniter underneath, ELVES' conventions on top):

- 5 fields, ``min hour dom month dow``: plain cron. Day-of-week is 0-6 or 7 = Sunday, names allowed.
- 6 fields: SECONDS FIRST, ``sec min hour dom month dow`` (Quartz, and ELVES' agent cron).
- 7 fields: Quartz with a year last; the year must be ``*`` or ``?`` (years are not supported).
- Quartz style, i.e. a rule with a ``?`` or 7 fields (ELVES' center cron, ``0/5 * * * * ?``):
  ``?`` ("no specific value", day-of-month or day-of-week only) becomes ``*``, and numeric
  day-of-week values are Quartz's 1-7 with 1 = SUNDAY, so each becomes cron's 0-6: in values,
  ranges, ``x/y`` starts, ``x#n`` (nth weekday) and ``xL`` (last weekday); names (MON-FRI) stay.
  A rule without ``?`` or a year keeps cron's day-of-week numbers (0 or 7 = Sunday).
- ``x/y`` is "from x every y" in any field; croniter reads it as ``x-max/y``, so it stays as given.
- ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly`` are read as croniter reads them.
- Refused with BadRule (403.6): empty, wrong field count, a year, hashed ``H`` and random ``R``
  values (a rule must name its times), whatever croniter refuses, and a rule that never fires.

`Rule.expression` is in croniter's own field order (seconds LAST), so croniter reads it as it is.

Time zones: a rule matches the wall clock of its zone; every time returned is UTC. Where the wall
clock jumps, croniter's own zone handling goes wrong (it skips an hour after the autumn change), so
croniter is only asked about wall-clock times and the mapping to UTC is done here:

- Spring forward (02:00-02:59 does not exist in Berlin on the last Sunday of March): a time in the
  gap fires once, at the first instant after it (03:00 summer time); several times in the gap fold
  into that one firing, and a firing already due at 03:00 is not doubled.
- Fall back (02:00-02:59 happens twice): a rule that names its hours (``30 2 * * *``) fires once,
  in the first pass; a rule whose hour field is every hour (``0 * * * *``, ``*/10 * * * * *``) runs
  on elapsed time and fires in both passes, so an hourly rule fires 25 times that day.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from elves.errors import BadRule, BadTimezone
from elves.schemas.events import derived_id

MisfirePolicy = Literal["run_once", "run_all", "skip"]
MISFIRE_POLICIES: tuple[str, ...] = get_args(MisfirePolicy)
OverlapPolicy = Literal["skip", "queue", "parallel"]
OVERLAP_POLICIES: tuple[str, ...] = get_args(OverlapPolicy)

_SHAPES = "5 fields (min hour dom month dow) or 6 with seconds first (sec min hour dom month dow)"
_ALIASES = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
# croniter's hashed (H) and random (R) values: a random one would change on every parse.
_HASHED = re.compile(r"^[hr](\(\d+-\d+\))?(/\d+)?$", re.IGNORECASE)
_DOM, _DOW = 2, 4  # in croniter's order: min hour dom month dow [sec]
# Where "never fires" is probed; croniter looks 50 years ahead, and a rule without a year field
# repeats at least every 28 years (the 29th of February on a given weekday).
_PROBE_WALL = 946_684_800  # 2000-01-01T00:00:00


@dataclass(frozen=True)
class Rule:
    text: str  # the rule as the user gave it
    expression: str  # the normalised croniter expression it became (seconds last)
    timezone: str  # IANA name, e.g. "UTC", "Asia/Shanghai", "Europe/Berlin"
    seconds: bool  # the rule has a seconds field


@dataclass(frozen=True)
class FirePlan:
    run: tuple[tuple[int, bool], ...]  # (scheduled_ms, catch_up) to fire now, oldest first
    missed: tuple[int, ...]  # scheduled times that will not run (recorded as missed)


def fire_event_id(cron_id: str, scheduled_at: int, kind: str) -> str:
    """The id of what befell `cron_id`'s fire at `scheduled_at` (`kind`: fired, queued,
    skipped), on the center or an agent: the same each time it is decided, sorted by the fire's
    time."""
    return derived_id(f"{cron_id}:{scheduled_at}", kind, at=scheduled_at)


def missed_event_id(cron_id: str, first_at: int, last_at: int) -> str:
    """The id of a record of `cron_id`'s missed fires from `first_at` to `last_at`, on the
    center or an agent: the same each time it is decided, sorted by the last missed time."""
    return derived_id(f"{cron_id}:{first_at}:{last_at}", "missed", at=last_at)


def parse_rule(text: str, timezone: str = "UTC") -> Rule:
    """Raises BadRule / BadTimezone with a clear message naming the problem."""
    return _parse(text, timezone)


@lru_cache(maxsize=4096)
def _parse(text: str, timezone: str) -> Rule:
    expression, seconds = _normalise(text)
    _zone(timezone)
    _template(expression, text)
    return Rule(text=text, expression=expression, timezone=timezone, seconds=seconds)


def next_fire(rule: Rule, after_ms: int) -> int:
    """The first scheduled time strictly after `after_ms`."""
    return _compile(rule.expression, rule.timezone).next_after(after_ms // 1000) * 1000


def next_fires(rule: Rule, after_ms: int, count: int) -> list[int]:
    """The next `count` scheduled times after `after_ms`, oldest first."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    fires: list[int] = []
    for _ in range(count):
        after_ms = next_fire(rule, after_ms)
        fires.append(after_ms)
    return fires


def fires_between(rule: Rule, after_ms: int, until_ms: int, limit: int) -> list[int]:
    """Scheduled times in (after_ms, until_ms], oldest first, at most `limit`.

    When there are more, the NEWEST `limit` are returned: the caller catches up after downtime,
    and the most recent times matter most. They are found by halving the span from its newest end,
    so a per-second rule over a day of downtime costs about `limit` steps, not 86,400.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if limit == 0 or until_ms <= after_ms:
        return []
    return _newest(rule, after_ms, until_ms, limit)


def _newest(rule: Rule, after_ms: int, until_ms: int, limit: int) -> list[int]:
    first = next_fire(rule, after_ms)
    if first > until_ms:
        return []
    if until_ms - first < 2 * limit * 1000:  # fires are whole seconds: at most 2 * limit of them
        fires = [first]
        while (later := next_fire(rule, fires[-1])) <= until_ms:
            fires.append(later)
        return fires[-limit:]
    middle = first + (until_ms - first) // 2
    newer = _newest(rule, middle, until_ms, limit)
    if len(newer) == limit:
        return newer
    return _newest(rule, first - 1, middle, limit - len(newer)) + newer


def plan_fires(
    due: Sequence[int],
    now_ms: int,
    policy: MisfirePolicy,
    grace_ms: int,
    max_catch_up: int = 100,
) -> FirePlan:
    """What to run now for `due` (unhandled scheduled times, all <= now_ms, oldest first).

    The newest due time is on time if it is at most `grace_ms` old; every other one is missed.
    skip runs only the on-time one. run_once runs the newest due time once, marked catch-up when
    anything was missed or it is late: all that was missed collapses into that one run (a daily
    job whose scheduler was down at its time runs once; a per-second one down for 10 s runs once,
    not twice). run_all runs every missed time as a catch-up, up to the newest `max_catch_up`.
    """
    if policy not in MISFIRE_POLICIES:
        raise ValueError(f"unknown misfire policy {policy!r}: one of {', '.join(MISFIRE_POLICIES)}")
    if grace_ms < 0 or max_catch_up < 0:
        raise ValueError("grace_ms and max_catch_up must be >= 0")
    if any(a >= b for a, b in zip(due, due[1:], strict=False)) or (due and due[-1] > now_ms):
        raise ValueError("due must be strictly increasing and not after now_ms")
    if not due:
        return FirePlan(run=(), missed=())
    on_time = due[-1] if now_ms - due[-1] <= grace_ms else None
    late = list(due[:-1] if on_time is not None else due)
    if policy == "run_once":
        return FirePlan(run=((due[-1], bool(late)),), missed=tuple(due[:-1]))
    keep = 0 if policy == "skip" else max_catch_up
    catch_up = late[len(late) - min(keep, len(late)) :]
    run = [(t, True) for t in catch_up]
    if on_time is not None:
        run.append((on_time, False))
    return FirePlan(run=tuple(run), missed=tuple(late[: len(late) - len(catch_up)]))


def _normalise(text: str) -> tuple[str, bool]:
    """The croniter expression (seconds last) for a rule, and whether it has seconds."""
    fields = text.split()
    if not fields:
        raise BadRule(f"the cron rule is empty: give {_SHAPES}", rule=text)
    if len(fields) == 1 and fields[0].lower() in _ALIASES:
        return fields[0].lower(), False
    if len(fields) not in (5, 6, 7):
        raise BadRule(
            f"cron rule {text!r} has {len(fields)} fields: give {_SHAPES}, "
            "or 7 (Quartz, with a year of * or ?)",
            rule=text,
        )
    quartz = len(fields) == 7 or "?" in text
    if len(fields) == 7 and fields.pop() not in ("*", "?"):
        raise BadRule(
            f"cron rule {text!r}: years are not supported (make the 7th field *)", rule=text
        )
    if any(_HASHED.match(field) for field in fields):
        raise BadRule(
            f"cron rule {text!r}: hashed (H) and random (R) values are not supported", rule=text
        )
    seconds = len(fields) == 6
    if seconds:
        fields.append(fields.pop(0))
    for index, field in enumerate(fields):
        if "?" in field and (field != "?" or index not in (_DOM, _DOW)):
            raise BadRule(
                f"cron rule {text!r}: ? (no specific value) may only be the whole "
                "day-of-month or day-of-week field",
                rule=text,
            )
    if fields[_DOM] == "?":
        fields[_DOM] = "*"
    if quartz:
        fields[_DOW] = "*" if fields[_DOW] == "?" else _quartz_dow(fields[_DOW], text)
    return " ".join(fields), seconds


def _quartz_dow(field: str, text: str) -> str:
    """Quartz day-of-week (1-7, 1 = Sunday) in cron's numbers (0-6, 0 = Sunday)."""

    def number(value: str) -> str:
        if not value.isdigit():
            return value  # a name, or *
        if not 1 <= int(value) <= 7:
            raise BadRule(
                f"cron rule {text!r}: a Quartz day-of-week is 1-7 (1 = Sunday), not {value}",
                rule=text,
            )
        return str(int(value) - 1)

    items = []
    for item in field.split(","):
        body, step_sep, step = item.partition("/")
        body, nth_sep, nth = body.partition("#")
        if body.upper() == "L":  # Quartz: L alone is the last day of the week, Saturday
            body = "7"
        last = len(body) > 1 and body[-1] in "Ll"
        body = "-".join(number(part) for part in (body[:-1] if last else body).split("-"))
        items.append(("L" if last else "") + body + nth_sep + nth + step_sep + step)
    return ",".join(items)


@dataclass(frozen=True)
class _Schedule:
    """A compiled rule: croniter walks the wall clock, the zone maps wall times to UTC."""

    template: Any  # a croniter; copied for each use, as croniter keeps its position in itself
    zone: ZoneInfo
    every_hour: bool  # fires in both passes of a repeated (fall-back) hour

    def next_wall(self, wall: int) -> int:
        """The first matching wall-clock time after `wall` (seconds, read as if UTC)."""
        return int(copy.copy(self.template).get_next(float, start_time=wall))

    def next_after(self, after: int) -> int:
        """The first firing strictly after the UTC second `after`.

        Two sequences, each increasing: every matching wall time at its first pass (a time in a
        gap at the gap's end), and, for every-hour rules, matching wall times in a repeated hour at
        their second pass. Each is entered where `after` falls on it; the answer is the earlier.
        """
        local = datetime.fromtimestamp(after, self.zone)
        offset = _seconds(local.utcoffset())
        other = _seconds(local.replace(fold=1 - local.fold).utcoffset())
        repeated = offset != other  # `after` is in a repeated hour (fall back)
        if local.fold == 0:  # outside it, or in its first pass: its second pass is all ahead
            start = after + offset
            if repeated:
                change = _change(self.zone, after, after + offset - other, offset)
                second_start = change + other - 1
        else:  # in its second pass: the first pass is over, resume where the hour ends
            change = _change(self.zone, after - (other - offset), after, other)
            start = change + other - 1
            second_start = after + offset
        wall = self.next_wall(start)
        best = self.first_pass_instant(wall)
        while best <= after:  # not expected; keeps next_fire increasing whatever a zone does
            wall = self.next_wall(wall)
            best = self.first_pass_instant(wall)
        if repeated and self.every_hour:
            wall = self.next_wall(second_start)
            old, new = _wall_offset(self.zone, wall, 0), _wall_offset(self.zone, wall, 1)
            if old > new and after < wall - new < best:  # `wall` is repeated: its second pass
                best = wall - new
        return best

    def first_pass_instant(self, wall: int) -> int:
        """The UTC second of a wall time's first pass; for a time in a gap, the gap's end."""
        old, new = _wall_offset(self.zone, wall, 0), _wall_offset(self.zone, wall, 1)
        if old >= new:  # an ordinary time, or a repeated one
            return wall - old
        return _change(self.zone, wall - new, wall - old, old)


def _change(zone: ZoneInfo, low: int, high: int, old: int) -> int:
    """The first UTC second in (low, high] whose offset is no longer `old` (low has `old`)."""
    while high - low > 1:
        middle = (low + high) // 2
        if _seconds(datetime.fromtimestamp(middle, zone).utcoffset()) == old:
            low = middle
        else:
            high = middle
    return high


@lru_cache(maxsize=4096)
def _compile(expression: str, timezone: str) -> _Schedule:
    template = _template(expression, expression)
    every_hour = template.expanded[1] == ["*"]
    return _Schedule(template=template, zone=_zone(timezone), every_hour=every_hour)


def _template(expression: str, text: str) -> Any:
    """croniter for `expression`, checked to fire; errors name `text`, the rule as given."""
    try:
        template = croniter(expression, 0, ret_type=float)
    except CroniterBadCronError as exc:
        raise BadRule(f"cron rule {text!r} is not valid: {_last_line(exc)}", rule=text) from exc
    try:
        template.get_next(float, start_time=_PROBE_WALL)
    except CroniterBadDateError as exc:
        raise BadRule(f"cron rule {text!r} never fires: no date matches it", rule=text) from exc
    return template


def _zone(name: str) -> ZoneInfo:
    if not name:
        raise BadTimezone("the time zone is empty: give an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise BadTimezone(
            f"unknown time zone {name!r}: give an IANA name such as Europe/Berlin", timezone=name
        ) from exc


def _wall_offset(zone: ZoneInfo, wall: int, fold: int) -> int:
    """The UTC offset of a wall-clock time, at its first (fold 0) or second (fold 1) pass."""
    local = datetime.fromtimestamp(wall, UTC).replace(tzinfo=zone, fold=fold)
    return _seconds(local.utcoffset())


def _seconds(delta: timedelta | None) -> int:
    return 0 if delta is None else delta // timedelta(seconds=1)


def _last_line(exc: Exception) -> str:
    # croniter sometimes puts a whole traceback in its message; the last line is the reason.
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__
