"""Snapshots, history records and chart definitions <-> the Redis field maps documented in `keys.py`.

Decoding is strict about what an operator could have mistyped with redis-cli: a value that
cannot be read raises CorruptState naming the key and field, never a bare ValueError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from stateservice.core import rules
from stateservice.core.chart import Chart, Snapshot, Transition
from stateservice.core.parse import Parsed, parse
from stateservice.core.slots import Slot
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
    halted = fields.get(keys.HALTED) or None
    halted_at = _optional_timestamp(key, keys.HALTED_AT, fields.get(keys.HALTED_AT), chart.name) if halted else None
    continuation = fields.get(keys.CONTINUATION) or None
    return Snapshot(state, read_counter(chart, fields, state, start), entered_at, halted, halted_at, continuation)


def _optional_timestamp(key: str, field: str, raw: str | None, chart: str) -> datetime | None:
    try:
        return read_timestamp(raw) if raw else None
    except ValueError:
        raise CorruptState(f"{key} field {field} is not a timestamp: {raw!r}", chart=chart) from None


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
        keys.HISTORY_AT: timestamp(move.at),
        keys.HISTORY_FROM: move.from_state,
        keys.HISTORY_TO: move.to_state,
        keys.HISTORY_CAUSE: move.cause,
        keys.HISTORY_HOST: move.host or "",
        keys.HISTORY_DUE_AT: timestamp(move.due_at) if move.due_at else "",
        keys.HISTORY_ACTOR: move.actor or "",
        keys.HISTORY_REMOTE: move.remote or "",
        **({keys.HISTORY_REASON: move.reason} if move.reason else {}),
    }


def decode_history(entry_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """A history record as `GET /charts/{chart}/history` shows it (empty fields as None)."""
    return {
        "id": entry_id,
        "at": fields.get(keys.HISTORY_AT),
        "from": fields.get(keys.HISTORY_FROM) or None,
        "to": fields.get(keys.HISTORY_TO),
        "cause": fields.get(keys.HISTORY_CAUSE),
        "host": fields.get(keys.HISTORY_HOST) or None,
        "due_at": fields.get(keys.HISTORY_DUE_AT) or None,
        "actor": fields.get(keys.HISTORY_ACTOR) or None,
        "remote": fields.get(keys.HISTORY_REMOTE) or None,
        "reason": fields.get(keys.HISTORY_REASON) or None,
    }


def encode_slot(slot: Slot) -> str:
    return json.dumps({"granted_at": timestamp(slot.granted_at), "expires_at": timestamp(slot.expires_at)})


def decode_slots(chart: str, state: str, fields: Mapping[str, str]) -> dict[str, Slot]:
    """A `slots:STATE` hash as Slots. Raises CorruptState naming the host whose entry cannot be read."""
    found: dict[str, Slot] = {}
    for host, raw in fields.items():
        try:
            value = json.loads(raw)
            found[host] = Slot(host, read_timestamp(value["granted_at"]), read_timestamp(value["expires_at"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CorruptState(
                f"{keys.chart_slots(chart, state)} field {host!r} is not a slot "
                '({"granted_at": ..., "expires_at": ...}); HDEL it to free the slot',
                chart=chart,
            ) from None
    return found


def encode_failure(at: datetime, reason: str | None) -> str:
    return json.dumps({"at": timestamp(at), "reason": reason})


def decode_failures(fields: Mapping[str, str]) -> list[dict[str, Any]]:
    """A `failed:STATE` hash as the chart view shows it: [{host, at, reason}], by host (unreadable entries kept)."""
    listed = []
    for host in sorted(fields):
        try:
            value = json.loads(fields[host])
            at, reason = value.get("at"), value.get("reason")
        except (ValueError, AttributeError):
            at, reason = None, fields[host]  # an operator's hand-written entry: shown as it is
        listed.append({"host": host, "at": at, "reason": reason})
    return listed


def encode_definition(chart: Chart, now: datetime) -> dict[str, str]:
    """The definition hash of a chart served from `now` on: where its file is, its digest and its text."""
    return {
        keys.DEFINITION_PATH: chart.path,
        keys.DEFINITION_DIGEST: chart.digest,
        keys.DEFINITION_SOURCE: chart.source,
        keys.DEFINITION_REGISTERED_AT: timestamp(now),
    }


def parse_definition(name: str, fields: Mapping[str, str], zone: tzinfo) -> Parsed:
    """The chart `name` as its stored definition hash says (its text parsed again, as at registration).

    The caller checks that a source is stored; naive `clock` times are read in `zone`.
    """
    return parse(fields[keys.DEFINITION_SOURCE], fields.get(keys.DEFINITION_PATH) or name, name, zone)
