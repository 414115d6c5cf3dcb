"""Snapshots and history records <-> the Redis field maps documented in `keys.py`.

Decoding is strict about what an operator could have mistyped with redis-cli: a value that
cannot be read raises CorruptState naming the key and field, never a bare ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from stateservice.core import rules
from stateservice.core.chart import Chart, Snapshot, Transition
from stateservice.errors import CorruptState
from stateservice.store import keys


def timestamp(at: datetime) -> str:
    """UTC ISO 8601 with microseconds, e.g. `2026-11-25T17:00:00.000000Z`."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_timestamp(text: str) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def decode_snapshot(chart: Chart, fields: Mapping[str, str]) -> Snapshot | None:
    """The snapshot in a chart's state hash, or None when the hash does not exist. Raises CorruptState."""
    if not fields:
        return None
    key = keys.chart_state(chart.name)
    state = fields.get(keys.CURRENT_STATE)
    if not state:
        raise CorruptState(f"{key} has no {keys.CURRENT_STATE} field; set it with redis-cli HSET", chart=chart.name)
    entered = fields.get(keys.ENTERED_AT)
    try:
        entered_at = read_timestamp(entered) if entered else datetime.fromtimestamp(0, UTC)
    except ValueError:
        raise CorruptState(f"{key} field {keys.ENTERED_AT} is not a timestamp: {entered!r}", chart=chart.name) from None
    known = chart.state(state)
    start = rules.start_count(known) if known else 0
    return Snapshot(state, read_counter(chart, fields, state, start), entered_at)


def read_counter(chart: Chart, fields: Mapping[str, str], state: str, default: int) -> int:
    """The `counter:STATE` field as an int (`default` when absent). Raises CorruptState."""
    raw = fields.get(keys.counter_field(state))
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise CorruptState(
            f"{keys.chart_state(chart.name)} field {keys.counter_field(state)} is not a whole number: {raw!r}",
            chart=chart.name,
        ) from None


def encode_snapshot(snap: Snapshot) -> dict[str, str]:
    return {
        keys.CURRENT_STATE: snap.state,
        keys.ENTERED_AT: timestamp(snap.entered_at),
        keys.counter_field(snap.state): str(snap.count),
    }


def initial_fields(chart: Chart, snap: Snapshot) -> dict[str, str]:
    """A fresh state hash: the snapshot plus every state's counter at its start value."""
    fields = {keys.counter_field(s.name): str(rules.start_count(s)) for s in chart.states if s.counter}
    fields.update(encode_snapshot(snap))
    return fields


def encode_transition(move: Transition) -> dict[str, str]:
    return {
        "at": timestamp(move.at),
        "from": move.from_state,
        "to": move.to_state,
        "cause": move.cause,
        "host": move.host or "",
        "due_at": timestamp(move.due_at) if move.due_at else "",
        "actor": move.actor or "",
        "remote": move.remote or "",
    }


def decode_history(entry_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    return {
        "id": entry_id,
        "at": fields.get("at"),
        "from": fields.get("from") or None,
        "to": fields.get("to"),
        "cause": fields.get("cause"),
        "host": fields.get("host") or None,
        "due_at": fields.get("due_at") or None,
        "actor": fields.get("actor") or None,
        "remote": fields.get("remote") or None,
    }
