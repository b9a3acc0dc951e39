"""Time and partitions: calendar and fixed-duration partitionings, cron schedules, parameters.

Parameter formats (docs/metadata-language.md): hourly ``2026-11-26T14``; daily and weekly ``2026-11-26`` (weekly = the
Monday); monthly ``2026-11``; yearly ``2026``; sub-hourly and cron ``2026-11-26T14:05``.

Day-and-longer periods follow their IANA time zone (a Stockholm day in March can be 23 hours) and
their parameters are local dates. Hourly and finer periods are named in UTC: a local wall-clock hour
is not unique across a DST fall-back, a UTC one always is, so every parameter names exactly one
period and round-trips. All instants handled here are timezone-aware.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$"
)

CALENDAR_UNITS = ("hourly", "daily", "weekly", "monthly", "yearly")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 duration without years or months (``PT5M``, ``P1D``, ``PT0S``)."""
    m = _DURATION.match(text or "")
    if not m or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"not an ISO 8601 duration such as PT5M or P1D: {text!r}")
    parts = {k: int(v) for k, v in m.groupdict().items() if v}
    return timedelta(**parts)


def format_duration(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    if total == 0:
        return "PT0S"
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    out = "P" + (f"{days}D" if days else "")
    time = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{seconds}S" if seconds else "")
    return out + ("T" + time if time else "")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone: {name!r}") from exc


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("naive datetime: Ferry works with timezone-aware instants only")
    return t


class Cadence(Protocol):
    """A sequence of contiguous, non-overlapping periods, each named by a parameter."""

    def floor(self, t: datetime) -> datetime:
        """Start of the period containing ``t``."""
        ...

    def next(self, start: datetime) -> datetime:
        """Start of the period after the one starting at ``start`` (= its end)."""
        ...

    def prev(self, start: datetime) -> datetime:
        ...

    def format(self, start: datetime) -> str:
        ...

    def parse(self, parameter: str) -> datetime:
        """Start of the period named ``parameter``; ValueError if it names none."""
        ...


def _local_midnight(d: date, tz: ZoneInfo) -> datetime:
    # Midnight exists in nearly every zone; where DST skips it the wall time is normalised forward.
    local = datetime(d.year, d.month, d.day, tzinfo=tz)
    return local.astimezone(UTC).astimezone(tz)


@dataclass(frozen=True)
class CalendarCadence:
    unit: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if self.unit not in CALENDAR_UNITS:
            raise ValueError(f"unknown calendar unit {self.unit!r}; use one of {', '.join(CALENDAR_UNITS)}")
        zone(self.tz)

    @property
    def _zone(self) -> ZoneInfo:
        return zone(self.tz)

    def floor(self, t: datetime) -> datetime:
        t = _aware(t)
        if self.unit == "hourly":
            return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        local = t.astimezone(self._zone)
        d = local.date()
        if self.unit == "weekly":
            d = d - timedelta(days=d.weekday())
        elif self.unit == "monthly":
            d = d.replace(day=1)
        elif self.unit == "yearly":
            d = d.replace(month=1, day=1)
        start = _local_midnight(d, self._zone)
        if start > local:  # midnight normalised forward past t (rare DST-at-midnight zones)
            start = _local_midnight(d - timedelta(days=1), self._zone)
        return start.astimezone(UTC)

    def _start_date(self, start: datetime) -> date:
        return start.astimezone(self._zone).date()

    def next(self, start: datetime) -> datetime:
        if self.unit == "hourly":
            return start.astimezone(UTC) + timedelta(hours=1)
        d = self._start_date(start)
        if self.unit == "daily":
            d = d + timedelta(days=1)
        elif self.unit == "weekly":
            d = d + timedelta(days=7)
        elif self.unit == "monthly":
            d = date(d.year + (d.month == 12), d.month % 12 + 1, 1)
        else:
            d = date(d.year + 1, 1, 1)
        return _local_midnight(d, self._zone).astimezone(UTC)

    def prev(self, start: datetime) -> datetime:
        if self.unit == "hourly":
            return start.astimezone(UTC) - timedelta(hours=1)
        return self.floor(start - timedelta(seconds=1))

    def format(self, start: datetime) -> str:
        if self.unit == "hourly":
            return start.astimezone(UTC).strftime("%Y-%m-%dT%H")
        d = self._start_date(start)
        if self.unit in ("daily", "weekly"):
            return d.isoformat()
        if self.unit == "monthly":
            return d.strftime("%Y-%m")
        return f"{d.year:04d}"

    def parse(self, parameter: str) -> datetime:
        try:
            if self.unit == "hourly":
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}", parameter):
                    raise ValueError
                start = datetime.strptime(parameter, "%Y-%m-%dT%H").replace(tzinfo=UTC)
            elif self.unit in ("daily", "weekly"):
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", parameter):
                    raise ValueError
                d = date.fromisoformat(parameter)
                if self.unit == "weekly" and d.weekday() != 0:
                    raise ValueError(f"weekly parameter {parameter!r} is not a Monday")
                start = _local_midnight(d, self._zone).astimezone(UTC)
            elif self.unit == "monthly":
                if not re.fullmatch(r"\d{4}-\d{2}", parameter):
                    raise ValueError
                start = _local_midnight(date(int(parameter[:4]), int(parameter[5:]), 1), self._zone)
            else:
                if not re.fullmatch(r"\d{4}", parameter):
                    raise ValueError
                start = _local_midnight(date(int(parameter), 1, 1), self._zone)
        except ValueError as exc:
            detail = f" ({exc})" if str(exc) else ""
            example = CALENDAR_EXAMPLES.get(self.unit, "")
            raise ValueError(f"{parameter!r} does not name a period of a {self.unit} partitioning{detail}: "
                             f"write it like {example}") from None
        return start.astimezone(UTC)


_MINUTE_FORMAT = "%Y-%m-%dT%H:%M"
# How a parameter of each calendar partitioning is written (help texts and errors show these).
CALENDAR_EXAMPLES = {"hourly": "2026-11-26T14 (UTC hour)", "daily": "2026-11-26", "weekly": "2026-11-23 (a Monday)",
                     "monthly": "2026-11", "yearly": "2026"}
PARAMETER_FORMATS = ("2026-11-26T14 (hourly, UTC), 2026-11-26 (daily), 2026-11-23 (weekly, a Monday), "
                     "2026-11 (monthly), 2026 (yearly), 2026-11-26T14:05 (minute-based such as PT5M, UTC)")


def _parse_minute(parameter: str) -> datetime:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", parameter):
        raise ValueError(f"{parameter!r} does not name a period of a minute-based partitioning: write it like "
                         "2026-11-26T14:05 (UTC)")
    return datetime.strptime(parameter, _MINUTE_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class DurationCadence:
    """Fixed-width periods aligned to the Unix epoch (``PT1M``, ``PT5M``, ``PT15M``...)."""

    width: timedelta

    def __post_init__(self) -> None:
        seconds = self.width.total_seconds()
        if seconds < 60 or seconds % 60:
            raise ValueError("a duration partitioning must be whole minutes, at least PT1M")
        if 86400 % seconds and seconds % 86400:
            raise ValueError("a duration partitioning must divide a day (PT5M, PT15M, PT2H...) or be whole days")

    def floor(self, t: datetime) -> datetime:
        offset = (_aware(t) - _EPOCH) // self.width
        return _EPOCH + offset * self.width

    def next(self, start: datetime) -> datetime:
        return start.astimezone(UTC) + self.width

    def prev(self, start: datetime) -> datetime:
        return start.astimezone(UTC) - self.width

    def format(self, start: datetime) -> str:
        return start.astimezone(UTC).strftime(_MINUTE_FORMAT)

    def parse(self, parameter: str) -> datetime:
        start = _parse_minute(parameter)
        if self.floor(start) != start:
            raise ValueError(f"{parameter!r} is not aligned to {format_duration(self.width)}")
        return start


CRON_ALIASES = {
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 1",
    "monthly": "0 0 1 * *",
    "yearly": "0 0 1 1 *",
}


def validate_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"a cron schedule has 5 fields (minute hour day month weekday), got {len(fields)}: {expression!r}")
    if not croniter.is_valid(expression):
        raise ValueError(f"invalid cron expression: {expression!r}")
    return expression


@dataclass(frozen=True)
class CronCadence:
    """Periods between consecutive fire times of a 5-field cron in a time zone."""

    expression: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        validate_cron(self.expression)
        zone(self.tz)

    def _iter(self, t: datetime) -> croniter:
        return croniter(self.expression, _aware(t).astimezone(zone(self.tz)))

    def floor(self, t: datetime) -> datetime:
        # get_next is strictly after t, so the fire time before it is the last one <= t.
        nxt = self._iter(t).get_next(datetime)
        prev = croniter(self.expression, nxt).get_prev(datetime)
        return prev.astimezone(UTC)

    def next(self, start: datetime) -> datetime:
        return self._iter(start).get_next(datetime).astimezone(UTC)

    def prev(self, start: datetime) -> datetime:
        return self._iter(start).get_prev(datetime).astimezone(UTC)

    def format(self, start: datetime) -> str:
        return start.astimezone(UTC).strftime(_MINUTE_FORMAT)

    def parse(self, parameter: str) -> datetime:
        start = _parse_minute(parameter)
        if self.floor(start) != start:
            raise ValueError(f"{parameter!r} is not a fire time of cron {self.expression!r}")
        return start


def partitioning(spec: str, tz: str = "UTC") -> Cadence:
    """Cadence of an Endpoint/EventType ``partitioning``: a calendar unit or an ISO duration."""
    if spec in CALENDAR_UNITS:
        return CalendarCadence(spec, tz)
    if spec.startswith("P"):
        width = parse_duration(spec)
        # A duration that is a calendar unit is that unit: P1D is the local day of the zone (DST-correct,
        # named 2026-11-26), not 24 UTC hours named 2026-11-26T00:00.
        if width == timedelta(hours=1):
            return CalendarCadence("hourly", tz)
        if width == timedelta(days=1):
            return CalendarCadence("daily", tz)
        if width == timedelta(weeks=1):
            return CalendarCadence("weekly", tz)
        return DurationCadence(width)
    raise ValueError(f"unknown partitioning {spec!r}: use hourly|daily|weekly|monthly|yearly or an ISO duration like PT5M")


def schedule(spec: str, tz: str = "UTC") -> Cadence:
    """Cadence of a Workflow ``schedule``: a calendar alias or a 5-field cron."""
    if spec in CALENDAR_UNITS:
        return CalendarCadence(spec, tz)
    return CronCadence(spec, tz)


def periods(cadence: Cadence, start: datetime, end: datetime) -> list[datetime]:
    """Starts of the periods with start in [start, end); ``start`` must be aligned."""
    out = []
    t = start
    while t < end:
        out.append(t)
        t = cadence.next(t)
    return out
