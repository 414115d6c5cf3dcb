"""Time states: reading their `when` values, and when a state falls due.

Pure: the zone for naive timestamps and the current time are parameters. `clock` values are
absolute instants (a naive one is read in the given zone: a time that zone skips is an
error, a time it repeats means its first occurrence); `elapsed` values are durations
counted from when the state was entered.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

from stateservice.core.chart import State

_SHORT = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_ISO = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")
MAX_DURATION = timedelta(days=36525)  # 100 years: longer is a typo, and would overflow datetime
DURATION_HELP = "a duration such as 90s, 10m, 2h, 1d, 1h30m or ISO 8601 PT10M"


def parse_duration(text: str) -> timedelta:
    """`90s`, `10m`, `2h`, `1d`, `1h30m`, or ISO 8601 `PT10M` / `P1DT2H`. Raises ValueError (also for zero)."""
    match = _SHORT.fullmatch(text) or _ISO.fullmatch(text)
    if match is None or not any(match.groups()) or text.endswith("T"):
        raise ValueError(f"{text!r} is not {DURATION_HELP}")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    try:
        duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        duration = MAX_DURATION * 2
    if duration <= timedelta(0):
        raise ValueError(f"{text!r} is not a positive duration")
    if duration > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than 100 years")
    return duration


def parse_instant(text: str, zone: tzinfo) -> tuple[datetime, bool]:
    """An ISO 8601 date-time as an aware UTC instant, and whether it was naive (read in `zone`).

    Raises ValueError for text that is not a date-time and for a naive time `zone` skips.
    """
    if "T" not in text and " " not in text:
        raise ValueError("expected a date and a time, such as 3000-01-01T12:00:00 or 3000-01-01T12:00:00Z")
    stamp = datetime.fromisoformat(text[:-1] + "Z" if text.endswith("z") else text)
    try:
        if stamp.tzinfo is not None:
            return stamp.astimezone(UTC), False
        local = stamp.replace(tzinfo=zone, fold=0)  # fold=0: in a repeated hour, the first occurrence
        if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != stamp:
            raise ValueError(f"{text} does not exist in time zone {zone} (the clocks skip it)")
        return local.astimezone(UTC), True
    except OverflowError:
        raise ValueError(f"{text} is outside the years 1 to 9999 in UTC") from None


def due_at(state: State, entered_at: datetime) -> datetime | None:
    """When a time state moves on: its clock time (never before it was entered), or entry + elapsed."""
    target = state.target
    if target is None:
        return None
    if target.due is not None:
        return max(target.due, entered_at)
    if target.after is not None:
        return entered_at + target.after
    return None
