"""How long hosts hold their slots: summed in the chart's state hash, so a refused host is told a useful wait.

Each release (a counted report, a failure, an explicit release) adds its hold time and one to
two fields, with HINCRBYFLOAT and HINCRBY inside the releasing transaction; the mean is their
quotient. Expired slots are left out: a host that went quiet says nothing about the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from redis.asyncio.client import Pipeline

from stateservice.store import keys


def observe(pipe: Pipeline, chart: str, state: str, held: timedelta) -> None:
    """Queue one release after `held`."""
    total, count = keys.slot_hold_total_field(state), keys.slot_hold_count_field(state)
    pipe.hincrbyfloat(keys.chart_state(chart), total, max(0.0, held.total_seconds()))
    pipe.hincrby(keys.chart_state(chart), count, 1)


def mean(state: str, fields: Mapping[str, str]) -> timedelta | None:
    """The mean hold time of slots of `state`, from the state hash's fields (None before the first release)."""
    total, count = keys.slot_hold_total_field(state), keys.slot_hold_count_field(state)
    try:
        seconds, releases = float(fields.get(total) or 0), int(fields.get(count) or 0)
    except ValueError:
        return None  # an operator's edit: the estimate falls back to the slots' expiry
    return timedelta(seconds=seconds / releases) if releases > 0 else None
