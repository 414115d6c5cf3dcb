"""Concurrency slots: at most `limit` hosts of a state at work at once, each holding one slot.

Pure: the holders and the time come in as values and the new holders go out as values;
`store/` keeps them with the chart and writes them in the chart's transaction, so the
limit holds whatever the number of workers and machines.

A host holds a slot from its grant until it reports (counted or failed), releases it, or
fails to renew it within the state's `slot_ttl` (it is then *expired*: freed, and listed so
that an operator can see which host went quiet). Asking again renews, never takes a second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

MIN_RETRY_AFTER = 1  # seconds: a refused host never polls faster than this
MAX_RETRY_AFTER = 60  # seconds: a hint, not a promise; past it the host should ask again anyway


@dataclass(frozen=True, slots=True)
class Slot:
    """One held slot: who holds it, since when, and when it expires unless renewed."""

    host: str
    granted_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Granted:
    """What an accepted slot request did: the holders after it, the host's slot, and whether it renewed."""

    holders: dict[str, Slot]
    slot: Slot
    renewed: bool


@dataclass(frozen=True, slots=True)
class Full:
    """A refused slot request: every slot is held. `retry_after` is the suggested wait in whole seconds."""

    held: int
    limit: int
    retry_after: int


def expire(holders: Mapping[str, Slot], now: datetime) -> tuple[dict[str, Slot], list[Slot]]:
    """The holders still within their ttl at `now`, and those that expired (oldest expiry first)."""
    alive = {host: slot for host, slot in holders.items() if slot.expires_at > now}
    gone = sorted((slot for slot in holders.values() if slot.expires_at <= now), key=lambda s: (s.expires_at, s.host))
    return alive, gone


def acquire(
    holders: Mapping[str, Slot],
    host: str,
    limit: int,
    ttl: timedelta,
    now: datetime,
    hold_time: timedelta | None = None,
) -> Granted | Full:
    """Grant or renew `host`'s slot among unexpired `holders`, or say how long to wait when all are taken.

    `holders` must already be expired at `now` (see `expire`): a slot past its ttl is free.
    `hold_time` is how long hosts have been holding their slots (e.g. the mean of recent
    releases), used for the wait estimate; without it the estimate is the earliest expiry.
    """
    assert limit >= 1, limit
    current = dict(holders)
    mine = current.get(host)
    if mine is not None:
        current[host] = Slot(host, mine.granted_at, now + ttl)
        return Granted(current, current[host], renewed=True)
    if len(current) >= limit:
        return Full(len(current), limit, retry_after(current.values(), now, hold_time))
    current[host] = Slot(host, now, now + ttl)
    return Granted(current, current[host], renewed=False)


def release(holders: Mapping[str, Slot], host: str) -> tuple[dict[str, Slot], Slot | None]:
    """The holders without `host`, and the slot it held (None if it held none: releasing is idempotent)."""
    current = dict(holders)
    return current, current.pop(host, None)


def retry_after(held: Iterable[Slot], now: datetime, hold_time: timedelta | None = None) -> int:
    """Whole seconds until a slot is likely free: the soonest a holder is expected done or expires.

    A holder is expected done at `granted_at + hold_time` when the usual hold time is known;
    it cannot hold past its expiry either way. Bounded to [MIN_RETRY_AFTER, MAX_RETRY_AFTER].
    """
    soonest: datetime | None = None
    for slot in held:
        done = slot.expires_at if hold_time is None else min(slot.expires_at, slot.granted_at + hold_time)
        soonest = done if soonest is None or done < soonest else soonest
    if soonest is None:
        return MIN_RETRY_AFTER
    wait = math.ceil((soonest - now).total_seconds())
    return max(MIN_RETRY_AFTER, min(MAX_RETRY_AFTER, wait))
