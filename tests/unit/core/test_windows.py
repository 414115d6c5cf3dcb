"""windows.py: examples (overnight spans, blackouts, DST), parse errors, then properties against a brute-force walk."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateservice.core.windows import Window, is_open, next_open, parse_blackout, parse_window

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = frozenset(range(5))
OFFICE = Window(WEEKDAYS, time(9), time(17))  # mon-fri 09:00-17:00
NIGHT = Window(frozenset({4}), time(22), time(2))  # fri 22:00 - sat 02:00


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# 2030-01-07 is a Monday


def test_no_windows_is_always_open_except_on_blackout_dates() -> None:
    assert is_open([], set(), utc(2030, 1, 7, 3), UTC)
    assert not is_open([], {date(2030, 1, 7)}, utc(2030, 1, 7, 3), UTC)
    assert next_open([], {date(2030, 1, 7), date(2030, 1, 8)}, utc(2030, 1, 7, 3), UTC) == utc(2030, 1, 9)


def test_a_window_is_open_from_its_start_until_just_before_its_end() -> None:
    assert not is_open([OFFICE], set(), utc(2030, 1, 7, 8, 59), UTC)
    assert is_open([OFFICE], set(), utc(2030, 1, 7, 9), UTC)
    assert is_open([OFFICE], set(), utc(2030, 1, 7, 16, 59), UTC)
    assert not is_open([OFFICE], set(), utc(2030, 1, 7, 17), UTC)
    assert not is_open([OFFICE], set(), utc(2030, 1, 12, 10), UTC)  # a Saturday


def test_the_next_opening_skips_the_weekend() -> None:
    friday_evening = utc(2030, 1, 11, 18)
    assert next_open([OFFICE], set(), friday_evening, UTC) == utc(2030, 1, 14, 9)
    assert next_open([OFFICE], set(), utc(2030, 1, 14, 10), UTC) == utc(2030, 1, 14, 10)  # open: now


def test_an_overnight_window_belongs_to_the_day_it_opens() -> None:
    assert is_open([NIGHT], set(), utc(2030, 1, 11, 23), UTC)
    assert is_open([NIGHT], set(), utc(2030, 1, 12, 1, 59), UTC)
    assert not is_open([NIGHT], set(), utc(2030, 1, 12, 2), UTC)
    assert not is_open([NIGHT], set(), utc(2030, 1, 12, 23), UTC)  # Saturday night is not Friday's
    assert not is_open([NIGHT], set(), utc(2030, 1, 11, 1), UTC)  # nor is Friday's small hours (Thursday's)


def test_equal_from_and_to_mean_the_whole_day() -> None:
    whole = Window(frozenset({0}), time(0), time(0))
    assert is_open([whole], set(), utc(2030, 1, 7, 0), UTC)
    assert is_open([whole], set(), utc(2030, 1, 7, 23, 59), UTC)
    assert not is_open([whole], set(), utc(2030, 1, 8, 0), UTC)


def test_a_blackout_shuts_its_local_date_and_the_gate_opens_at_the_next_window() -> None:
    christmas = {date(2030, 12, 24), date(2030, 12, 25)}
    assert not is_open([OFFICE], christmas, utc(2030, 12, 24, 10), UTC)
    assert next_open([OFFICE], christmas, utc(2030, 12, 24, 10), UTC) == utc(2030, 12, 26, 9)


def test_an_overnight_window_resumes_at_the_midnight_that_ends_a_blackout() -> None:
    friday = date(2030, 1, 11)
    assert next_open([NIGHT], {friday}, utc(2030, 1, 11, 23), UTC) == utc(2030, 1, 12, 0)


def test_windows_are_read_in_the_given_zone() -> None:
    # 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer
    assert next_open([OFFICE], set(), utc(2030, 1, 7, 6), BERLIN) == utc(2030, 1, 7, 8)
    assert next_open([OFFICE], set(), utc(2030, 7, 1, 6), BERLIN) == utc(2030, 7, 1, 7)
    # the blackout is a Berlin date: 23:30 UTC on the 23rd is already the 24th there
    assert not is_open([], {date(2030, 12, 24)}, utc(2030, 12, 23, 23, 30), BERLIN)


def test_a_window_opening_in_the_skipped_hour_opens_at_the_skip() -> None:
    # 2030-03-31: Berlin's clocks go from 02:00 to 03:00 (01:00 UTC); a 02:30 opening happens then
    sunday_0230 = Window(frozenset({6}), time(2, 30), time(4))
    assert next_open([sunday_0230], set(), utc(2030, 3, 30, 12), BERLIN) == utc(2030, 3, 31, 1)


def test_a_window_opening_in_the_repeated_hour_opens_at_its_first_occurrence() -> None:
    # 2030-10-27: Berlin's clocks go from 03:00 back to 02:00 (01:00 UTC); 02:30 happens at 00:30 and 01:30 UTC
    sunday_0230 = Window(frozenset({6}), time(2, 30), time(2, 45))
    first = next_open([sunday_0230], set(), utc(2030, 10, 26, 12), BERLIN)
    assert first == utc(2030, 10, 27, 0, 30)
    assert next_open([sunday_0230], set(), utc(2030, 10, 27, 0, 50), BERLIN) == utc(2030, 10, 27, 1, 30)


def test_blackouts_that_never_end_within_ten_years_give_no_opening() -> None:
    every_day = {date(2030, 1, 1) + timedelta(days=n) for n in range(3700)}
    assert next_open([], every_day, utc(2030, 1, 1), UTC) is None


def test_parse_window_reads_days_and_times() -> None:
    window = parse_window({"days": ["Mon", "tue"], "from": "22:00", "to": "06:30"})
    assert window == Window(frozenset({0, 1}), time(22), time(6, 30))
    assert window.overnight
    assert str(window) == "mon,tue 22:00-06:30"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"days": ["mon"], "from": "09:00"}, "a window needs 'to'"),
        ({"days": ["mon"], "from": "09:00", "to": "17:00", "tz": "x"}, "unknown key 'tz'"),
        ({"days": [], "from": "09:00", "to": "17:00"}, "days must be a list of mon"),
        ({"days": "mon", "from": "09:00", "to": "17:00"}, "days must be a list of mon"),
        ({"days": ["monday"], "from": "09:00", "to": "17:00"}, "'monday' is not a day"),
        ({"days": ["mon"], "from": "9:00", "to": "17:00"}, "'from' must be a time \"HH:MM\""),
        ({"days": ["mon"], "from": "09:00", "to": "24:00"}, "'to' must be a time \"HH:MM\""),
        ({"days": ["mon"], "from": 570, "to": "17:00"}, "must be quoted"),
    ],
)
def test_parse_window_says_what_is_wrong(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        parse_window(raw)
    assert message in str(caught.value)


def test_parse_blackout_takes_dates_and_refuses_the_rest() -> None:
    assert parse_blackout("2030-12-24") == date(2030, 12, 24)
    assert parse_blackout(date(2030, 12, 24)) == date(2030, 12, 24)
    for bad in ("24.12.2030", 20301224, datetime(2030, 12, 24, 1)):
        with pytest.raises(ValueError, match="a blackout is a date"):
            parse_blackout(bad)


# --- properties: against a walk, minute by minute, of an independent definition ---

ZONES = [UTC, BERLIN, ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Asia/Kolkata")]
START = datetime(2030, 3, 20, tzinfo=UTC)  # near the March changes of New York, Berlin and Lord Howe

clocks = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
windows = st.builds(Window, st.frozensets(st.integers(0, 6), min_size=1), clocks, clocks)
instants = st.integers(0, 30 * 24 * 4).map(lambda quarters: START + timedelta(minutes=15 * quarters))
blackout_sets = st.sets(st.integers(0, 40).map(lambda n: START.date() + timedelta(days=n)), max_size=4)


def _reference_open(spans: list[Window], blackouts: set[date], at: datetime, zone: ZoneInfo) -> bool:
    """Open iff not a blackout date and inside an occurrence [day+opens, day(+1)+closes) of wall-clock time."""
    wall = at.astimezone(zone).replace(tzinfo=None)
    if wall.date() in blackouts:
        return False
    if not spans:
        return True
    for window in spans:
        for back in (0, 1):
            day = wall.date() - timedelta(days=back)
            if day.weekday() not in window.days:
                continue
            begin = datetime.combine(day, window.opens)
            end = datetime.combine(day + timedelta(days=1 if window.overnight else 0), window.closes)
            if begin <= wall < end:
                return True
    return False


@settings(max_examples=300, deadline=None)
@given(st.lists(windows, max_size=3), blackout_sets, instants, st.sampled_from(ZONES))
def test_is_open_agrees_with_the_reference(
    spans: list[Window], blackouts: set[date], at: datetime, zone: ZoneInfo
) -> None:
    assert is_open(spans, blackouts, at, zone) == _reference_open(spans, blackouts, at, zone)


@settings(max_examples=100, deadline=None)
@given(st.lists(windows, min_size=1, max_size=2), blackout_sets, instants, st.sampled_from(ZONES))
def test_next_open_is_the_first_open_minute(
    spans: list[Window], blackouts: set[date], at: datetime, zone: ZoneInfo
) -> None:
    """Offsets, clock changes and window times here are all on quarter hours, so a walk by quarters is exact."""
    walk = at
    while not _reference_open(spans, blackouts, walk, zone):  # weekly windows, 4 blackouts: open within 12 days
        walk += timedelta(minutes=15)
    assert next_open(spans, blackouts, at, zone) == walk
