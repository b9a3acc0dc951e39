"""Time and partitions: property tests over every partitioning and several awkward time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.domain import periods
from ferry.domain.periods import (
    CalendarCadence,
    CronCadence,
    format_duration,
    parse_duration,
    partitioning,
    schedule,
)

SPECS = ["hourly", "daily", "weekly", "monthly", "yearly", "PT1M", "PT5M", "PT15M", "PT2H", "P1D"]
ZONES = ["UTC", "Europe/Stockholm", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
         # midnight itself is skipped or repeated by DST in these
         "America/Havana", "America/Santiago"]
CRONS = ["* * * * *", "*/5 * * * *", "0 * * * *", "30 1 * * *", "0 2 * * *", "15 2 * * 1-5", "0 0 1 * *"]



def _transitions(years: range) -> list[datetime]:
    """UTC instants where some zone's offset changes (DST), where the bugs live."""
    out = []
    for name in ZONES:
        tz = periods.zone(name)
        t = datetime(years.start, 1, 1, tzinfo=UTC)
        end = datetime(years.stop, 1, 1, tzinfo=UTC)
        before = t.astimezone(tz).utcoffset()
        while t < end:
            t += timedelta(minutes=30)
            now = t.astimezone(tz).utcoffset()
            if now != before:
                out.append(t)
            before = now
    return out


TRANSITIONS = _transitions(range(2025, 2028))
anywhere = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 12, 31), timezones=st.just(UTC))
near_dst = st.builds(lambda at, minutes: at + timedelta(minutes=minutes), st.sampled_from(TRANSITIONS),
                     st.integers(min_value=-3 * 24 * 60, max_value=3 * 24 * 60))
instants = st.one_of(anywhere, near_dst)
cadences = st.builds(partitioning, st.sampled_from(SPECS), st.sampled_from(ZONES))
cron_cadences = st.builds(schedule, st.sampled_from(CRONS),
                          st.sampled_from(["UTC", "Europe/Stockholm", "America/New_York", "Australia/Lord_Howe"]))


# -- properties of every partitioning ----------------------------------------------------------------

@given(cadences, instants)
@settings(deadline=None)  # a shared 2-core machine: no per-example deadline
def test_floor_contains_the_instant(c, t):
    start = c.floor(t)
    assert start <= t < c.next(start)
    assert start.tzinfo is not None


@given(cadences, instants)
@settings(deadline=None)  # a shared 2-core machine: no per-example deadline
def test_parameter_round_trips(c, t):
    start = c.floor(t)
    parameter = c.format(start)
    assert c.parse(parameter) == start
    assert c.format(c.parse(parameter)) == parameter


@given(cadences, instants, st.integers(min_value=1, max_value=6))
@settings(deadline=None)  # a shared 2-core machine: no per-example deadline
def test_consecutive_periods_are_contiguous_and_ordered(c, t, n):
    start = c.floor(t)
    seq = [start]
    for _ in range(n):
        seq.append(c.next(seq[-1]))
    for a, b in zip(seq, seq[1:], strict=False):
        assert a < b  # never empty, never overlapping
        assert c.floor(b) == b  # each next is itself a period start
        assert c.floor(b - timedelta(microseconds=1)) == a  # nothing between a period and the next
    assert len({c.format(s) for s in seq}) == len(seq)  # distinct names


@given(cadences, instants)
@settings(deadline=None)  # a shared 2-core machine: no per-example deadline
def test_next_and_prev_are_inverse(c, t):
    start = c.floor(t)
    assert c.prev(c.next(start)) == start
    assert c.next(c.prev(start)) == start


@given(cron_cadences, instants)
@settings(max_examples=150, deadline=None)
def test_cron_floor_next_prev(c, t):
    start = c.floor(t)
    assert start <= t < c.next(start)
    assert c.prev(c.next(start)) == start
    assert c.parse(c.format(start)) == start


@given(cadences, instants, st.integers(min_value=0, max_value=20))
@settings(deadline=None)  # a shared 2-core machine: no per-example deadline
def test_periods_lists_consecutive_starts(c, t, n):
    start = c.floor(t)
    end = start
    for _ in range(n):
        end = c.next(end)
    got = periods.periods(c, start, end)
    assert len(got) == n
    if got:
        assert got[0] == start and c.next(got[-1]) == end


# -- parameter formats (docs/metadata-language.md) ----------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "tz", "parameter", "start"), [
    ("hourly", "UTC", "2026-11-26T14", datetime(2026, 11, 26, 14, tzinfo=UTC)),
    ("hourly", "Europe/Stockholm", "2026-11-26T14", datetime(2026, 11, 26, 14, tzinfo=UTC)),  # UTC names
    ("daily", "UTC", "2026-11-26", datetime(2026, 11, 26, tzinfo=UTC)),
    ("daily", "Europe/Stockholm", "2026-11-26", datetime(2026, 11, 25, 23, tzinfo=UTC)),  # local dates
    ("weekly", "UTC", "2026-11-23", datetime(2026, 11, 23, tzinfo=UTC)),
    ("monthly", "America/New_York", "2026-11", datetime(2026, 11, 1, 4, tzinfo=UTC)),
    ("yearly", "Asia/Kolkata", "2026", datetime(2025, 12, 31, 18, 30, tzinfo=UTC)),
    ("PT5M", "UTC", "2026-11-26T14:05", datetime(2026, 11, 26, 14, 5, tzinfo=UTC)),
    ("PT1M", "UTC", "2026-11-26T14:07", datetime(2026, 11, 26, 14, 7, tzinfo=UTC)),
    ("P1D", "Europe/Stockholm", "2026-11-26", datetime(2026, 11, 25, 23, tzinfo=UTC)),
])
def test_parameter_formats(spec, tz, parameter, start):
    c = partitioning(spec, tz)
    assert c.parse(parameter) == start
    assert c.format(start) == parameter


@pytest.mark.parametrize(("spec", "bad"), [
    ("hourly", "2026-11-26"), ("hourly", "2026-11-26T14:00"), ("hourly", "2026-11-26T25"),
    ("daily", "2026-11-26T00"), ("daily", "2026-02-30"), ("weekly", "2026-11-26"),  # a Thursday
    ("monthly", "2026-13"), ("monthly", "2026-1"), ("yearly", "26"),
    ("PT5M", "2026-11-26T14:03"), ("PT5M", "2026-11-26T14"), ("PT1M", "garbage"),
])
def test_parse_rejects_what_names_no_period(spec, bad):
    with pytest.raises(ValueError):
        partitioning(spec).parse(bad)


def test_stockholm_days_around_dst_are_23_and_25_hours():
    day = partitioning("daily", "Europe/Stockholm")
    march = day.parse("2026-03-29")
    assert day.next(march) - march == timedelta(hours=23)
    october = day.parse("2026-10-25")
    assert day.next(october) - october == timedelta(hours=25)
    ordinary = day.parse("2026-06-01")
    assert day.next(ordinary) - ordinary == timedelta(hours=24)


def test_hourly_is_unambiguous_across_fall_back():
    hour = partitioning("hourly", "Europe/Stockholm")
    # 02:00-03:00 local happens twice on 2026-10-25; in UTC they are two distinct hours
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert hour.format(hour.floor(first)) == "2026-10-25T00"
    assert hour.format(hour.floor(second)) == "2026-10-25T01"


def test_weekly_starts_on_monday_and_lord_howe_half_hour_dst():
    week = partitioning("weekly", "Australia/Lord_Howe")
    start = week.floor(datetime(2026, 10, 7, 12, tzinfo=UTC))
    assert start.astimezone(periods.zone("Australia/Lord_Howe")).weekday() == 0
    # Lord Howe moves its clocks by 30 minutes on the first Sunday of October
    assert week.next(start) - start == timedelta(days=7)
    dst_week = week.parse("2026-09-28")
    assert week.next(dst_week) - dst_week == timedelta(days=7, minutes=-30)


def test_pt1h_is_hourly_and_p1d_is_daily():
    assert partitioning("PT1H", "Europe/Stockholm") == CalendarCadence("hourly", "Europe/Stockholm")
    assert partitioning("P1D", "Europe/Stockholm") == CalendarCadence("daily", "Europe/Stockholm")


@pytest.mark.parametrize("spec", ["minutely", "PT7M", "PT30S", "P1M", "", "daily "])
def test_bad_partitionings(spec):
    with pytest.raises(ValueError):
        partitioning(spec)


def test_unknown_zone():
    with pytest.raises(ValueError, match="IANA"):
        partitioning("daily", "Mars/Olympus")


def test_naive_instants_are_refused():
    with pytest.raises(ValueError, match="naive"):
        partitioning("daily").floor(datetime(2026, 1, 1))


# -- schedules -----------------------------------------------------------------------------------------

def test_aliases_and_crons():
    assert schedule("hourly") == CalendarCadence("hourly", "UTC")
    c = schedule("0 2 * * *", "Europe/Stockholm")
    assert isinstance(c, CronCadence)
    start = c.floor(datetime(2026, 1, 10, 12, tzinfo=UTC))
    assert start == datetime(2026, 1, 10, 1, tzinfo=UTC)  # 02:00 CET
    assert c.format(start) == "2026-01-10T01:00"
    summer = c.floor(datetime(2026, 7, 10, 12, tzinfo=UTC))
    assert summer == datetime(2026, 7, 10, 0, tzinfo=UTC)  # 02:00 CEST


def test_minutely_cron():
    c = schedule("* * * * *")
    t = datetime(2026, 11, 26, 14, 5, 30, tzinfo=UTC)
    assert c.floor(t) == datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
    assert c.next(c.floor(t)) == datetime(2026, 11, 26, 14, 6, tzinfo=UTC)


def test_cron_parse_rejects_non_fire_times():
    with pytest.raises(ValueError, match="fire time"):
        schedule("*/15 * * * *").parse("2026-11-26T14:05")


@pytest.mark.parametrize("expr", ["0 0 * * * *", "* * * *", "61 * * * *", "every day", "0 0 * * 8x"])
def test_bad_crons_rejected(expr):
    with pytest.raises(ValueError):
        schedule(expr)


def test_six_field_cron_names_the_problem():
    with pytest.raises(ValueError, match="5 fields"):
        schedule("0 */5 * * * *")


# -- durations -----------------------------------------------------------------------------------------

@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)).map(
    lambda d: timedelta(seconds=int(d.total_seconds()))))
@settings(deadline=None)  # a shared 2-core machine: no per-example deadline
def test_duration_round_trip(d):
    assert parse_duration(format_duration(d)) == d


@pytest.mark.parametrize(("text", "delta"), [
    ("PT0S", timedelta(0)), ("PT5M", timedelta(minutes=5)), ("PT2H", timedelta(hours=2)),
    ("P1D", timedelta(days=1)), ("P1W", timedelta(weeks=1)), ("P1DT2H3M4S", timedelta(days=1, seconds=7384)),
])
def test_parse_duration(text, delta):
    assert parse_duration(text) == delta


@pytest.mark.parametrize("text", ["", "P", "PT", "5M", "PT5", "P1M", "P1Y", "pt5m", "PT-5M", "P1DT"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_duration(text)
