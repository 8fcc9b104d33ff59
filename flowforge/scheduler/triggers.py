"""When a job fires: cron expressions in a time zone, and one-time runs.

croniter does the calendar arithmetic, on *wall-clock* (naive local) times; this module
turns each wall-clock time into one instant:

* a wall-clock time that happens twice (the fall-back hour) fires once, at its first
  occurrence, and the second pass through that hour fires nothing: a daily ``30 1 * * *``
  runs once on that day, not twice as croniter alone would have it;
* a wall-clock time that never happens (the spring-forward gap) fires once, at the first
  valid instant after the gap (02:30 becomes 03:00 in Europe/Berlin).

An expression that can never fire (``0 0 31 2 *``) is refused when the trigger is made.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import ScheduleError

__all__ = ["CronTrigger", "OnceTrigger", "Trigger"]

UTC = timezone.utc
_ALIASES = {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}
_FIELDS = ("minute", "hour", "day of month", "month", "day of week")


class Trigger(Protocol):
    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (an aware datetime), in UTC."""

    def describe(self) -> str: ...


class CronTrigger:
    """A 5-field cron expression (or an ``@daily``-style alias) in an IANA time zone."""

    def __init__(self, expression: str, timezone_name: str = "UTC") -> None:
        self.expression = " ".join(str(expression).split())
        self.timezone = timezone_name
        try:
            self.zone = ZoneInfo(timezone_name)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            msg = (
                f"unknown time zone {timezone_name!r}; use an IANA name such as 'UTC' or "
                "'Europe/Berlin'"
            )
            raise ScheduleError(msg, field="timezone", value=timezone_name) from None
        _check_expression(self.expression)

    def next_after(self, after: datetime) -> datetime | None:
        from croniter import croniter

        if after.tzinfo is None:
            msg = "scheduler times must be timezone-aware datetimes"
            raise ValueError(msg)
        wall = after.astimezone(self.zone).replace(tzinfo=None)
        times = croniter(self.expression, wall)
        for _ in range(10_000):  # a fold can make a few wall times map before `after`
            instant = _instant(times.get_next(datetime), self.zone)
            if instant > after:
                return instant.astimezone(UTC)
        return None  # pragma: no cover - only for an expression that stops firing

    def describe(self) -> str:
        return f"cron {self.expression!r} ({self.timezone})"


class OnceTrigger:
    """A single run at ``at`` (an aware datetime or an ISO 8601 string with an offset)."""

    def __init__(self, at: datetime | str) -> None:
        if isinstance(at, str):
            try:
                at = datetime.fromisoformat(at)
            except ValueError:
                msg = f"at={at!r} is not an ISO 8601 time such as '2026-12-01T10:00:00+00:00'"
                raise ScheduleError(msg, field="at", value=at) from None
        if not isinstance(at, datetime) or at.tzinfo is None:
            msg = f"at= needs a time with its UTC offset (an aware datetime), got {at!r}"
            raise ScheduleError(msg, field="at", value=at)
        self.at = at.astimezone(UTC)

    def next_after(self, after: datetime) -> datetime | None:
        return self.at if self.at > after else None

    def describe(self) -> str:
        return f"once at {self.at.isoformat()}"


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a wall-clock time means: its first occurrence, or the end of a gap."""
    probe = wall
    for _ in range(24 * 60):  # gaps are at most a few hours
        aware = probe.replace(tzinfo=zone, fold=0)
        if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == probe:
            return aware
        probe = (probe + timedelta(minutes=1)).replace(second=0, microsecond=0)
    return wall.replace(tzinfo=zone)  # pragma: no cover


def _check_expression(expression: str) -> None:
    from croniter import croniter

    if expression in _ALIASES:
        return
    fields = expression.split()
    if len(fields) != 5:
        msg = (
            f"cron expression {expression!r} has {len(fields)} fields; it needs 5 (minute "
            "hour day-of-month month day-of-week) or an alias such as '@daily'"
        )
        raise ScheduleError(msg, field="expression", value=expression)
    for i, name in enumerate(_FIELDS):
        alone = ["*"] * 5
        alone[i] = fields[i]
        if not croniter.is_valid(" ".join(alone)):
            msg = (
                f"cron expression {expression!r}: its {name} field {fields[i]!r} is not valid"
            )
            raise ScheduleError(msg, field=name, value=fields[i])
    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except Exception:
        msg = (
            f"cron expression {expression!r} can never fire (no date matches it, like "
            "February 31st); check its day-of-month and month fields"
        )
        raise ScheduleError(msg, field="expression", value=expression) from None
