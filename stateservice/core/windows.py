"""Deployment windows and blackouts: when a state's gate may open.

Pure: the instant and the zone are parameters. A window is a weekly span of wall-clock time
(`{days: [mon, ...], from: "HH:MM", to: "HH:MM"}`) in the chart's zone; one whose `to` is
not after its `from` runs past midnight into the next day (`from` equal to `to`: all day).
`days` name the day a window opens on. A blackout is a local date on which nothing opens.

An instant is open when its local date is not a blackout and it lies in some window (no
windows: every day, all day). Openness can only begin where a window opens or where a
blackout date ends, so the next opening is the first such instant that is open.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
WINDOW_KEYS = ("days", "from", "to")
LOOKAHEAD = timedelta(days=8)  # every weekly window opens within a week of any instant
MAX_SEARCH = timedelta(days=3660)  # blackouts beyond ten years do not hold a gate shut "forever"


@dataclass(frozen=True, slots=True)
class Window:
    """Opens on `days` (0 = Monday) at `opens` and closes at `closes` (the next day when not after `opens`)."""

    days: frozenset[int]
    opens: time
    closes: time

    @property
    def overnight(self) -> bool:
        return self.closes <= self.opens

    def holds(self, local: datetime) -> bool:
        """Whether the wall-clock instant `local` lies in this window (an occurrence from today or yesterday)."""
        clock = local.time().replace(tzinfo=None)
        if local.weekday() in self.days and clock >= self.opens and (self.overnight or clock < self.closes):
            return True
        yesterday = (local.weekday() - 1) % 7
        return self.overnight and yesterday in self.days and clock < self.closes

    def __str__(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return f"{days} {self.opens:%H:%M}-{self.closes:%H:%M}"


def is_open(windows: Iterable[Window], blackouts: Set[date], at: datetime, zone: tzinfo) -> bool:
    """Whether a gate under these windows and blackouts is open at the aware instant `at`."""
    local = at.astimezone(zone)
    if local.date() in blackouts:
        return False
    spans = list(windows)
    return not spans or any(window.holds(local) for window in spans)


def next_open(windows: Iterable[Window], blackouts: Set[date], at: datetime, zone: tzinfo) -> datetime | None:
    """The first instant at or after `at` when the gate is open (aware UTC), or None within ten years."""
    spans = list(windows)
    if is_open(spans, blackouts, at, zone):
        return at
    first = at.astimezone(zone).date()
    last_blackout = max((d for d in blackouts if d >= first), default=first)
    until = min(max(first + LOOKAHEAD, last_blackout + LOOKAHEAD), first + MAX_SEARCH)
    for candidate in _openings(spans, blackouts, first, until, zone):
        if candidate > at and is_open(spans, blackouts, candidate, zone):
            return candidate
    return None


def _openings(
    windows: list[Window], blackouts: Set[date], first: date, until: date, zone: tzinfo
) -> Iterable[datetime]:
    """Every instant from `first` to `until` (local dates) where openness may begin, in order."""
    day = first
    while day <= until:
        clocks = [window.opens for window in windows if day.weekday() in window.days]
        if day - timedelta(days=1) in blackouts or not windows:
            clocks.append(time(0))  # a blackout ends at midnight
        yield from sorted(instant for clock in clocks for instant in _instants(day, clock, zone))
        day += timedelta(days=1)


def _instants(day: date, clock: time, zone: tzinfo) -> set[datetime]:
    """The UTC instants when the local wall clock reaches `clock` on `day`.

    Usually one. A time the clocks repeat (autumn) is reached twice; one they skip (spring)
    is reached at the skip itself, the first instant whose wall-clock time is past it.
    """
    naive = datetime.combine(day, clock)
    both = {naive.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)}
    if all(moment.astimezone(zone).replace(tzinfo=None) == naive for moment in both):
        return both
    low, high = min(both), max(both)  # the skip lies between the two readings of a skipped time
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return {high.replace(microsecond=0)}


def parse_window(raw: Mapping[str, object]) -> Window:
    """One `windows:` item. Raises ValueError naming the key that is wrong."""
    unknown = sorted(set(raw) - set(WINDOW_KEYS), key=str)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in a window; a window has {', '.join(WINDOW_KEYS)}")
    missing = [key for key in WINDOW_KEYS if key not in raw]
    if missing:
        raise ValueError(f"a window needs {' and '.join(repr(k) for k in missing)}")
    return Window(_days(raw["days"]), _clock(raw["from"], "from"), _clock(raw["to"], "to"))


def _days(raw: object) -> frozenset[int]:
    names = raw if isinstance(raw, list) else None
    if not names:
        raise ValueError(f"a window's days must be a list of {', '.join(DAYS)}")
    found = set()
    for name in names:
        if not isinstance(name, str) or name.lower() not in DAYS:
            raise ValueError(f"{name!r} is not a day; days are {', '.join(DAYS)}")
        found.add(DAYS.index(name.lower()))
    return frozenset(found)


def _clock(raw: object, key: str) -> time:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raise ValueError(f'a window\'s {key!r} must be quoted ("HH:MM"): YAML reads 09:30 unquoted as a number')
    match = _HHMM.fullmatch(raw) if isinstance(raw, str) else None
    if match is None:
        raise ValueError(f'a window\'s {key!r} must be a time "HH:MM" from 00:00 to 23:59, not {raw!r}')
    return time(int(match.group(1)), int(match.group(2)))


def parse_blackout(raw: object) -> date:
    """One `blackouts:` item: a date (YAML reads 2026-12-24 as one) or the text of one."""
    if isinstance(raw, datetime):
        raise ValueError(f"a blackout is a date such as 2026-12-24, not a date and time ({raw})")
    if isinstance(raw, date):
        return raw
    if isinstance(raw, str):
        try:
            return date.fromisoformat(raw)
        except ValueError:
            pass
    raise ValueError(f"a blackout is a date such as 2026-12-24, not {raw!r}")
