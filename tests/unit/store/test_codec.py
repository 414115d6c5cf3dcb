"""store/codec.py: what a chart's state and history look like in Redis, written and read back (no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from stateservice.core.chart import Chart, Snapshot, Transition
from stateservice.errors import CorruptState
from stateservice.store import codec, keys

T0 = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.mark.parametrize(
    "at",
    [
        T0,
        datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2030, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ],
)
def test_timestamp_round_trip(at: datetime) -> None:
    text = codec.timestamp(at)
    assert text.endswith("Z")
    back = codec.read_timestamp(text)
    assert back == at
    assert back.utcoffset() == timedelta(0)


def test_timestamp_is_utc_with_microseconds() -> None:
    assert codec.timestamp(T0) == "2030-01-02T03:04:05.678901Z"


def test_read_timestamp_treats_naive_as_utc() -> None:
    assert codec.read_timestamp("2030-01-02T03:04:05") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_snapshot_round_trip(chart: Chart) -> None:
    snap = Snapshot("fleet", 6, T0)
    fields = codec.encode_snapshot(snap)
    assert fields == {"current_state": "fleet", "entered_at": "2030-01-02T03:04:05.678901Z", "counter:fleet": "6"}
    assert codec.decode_snapshot(chart, fields) == snap


def test_initial_fields_hold_every_counter_at_its_start(chart: Chart) -> None:
    fields = codec.initial_fields(chart, Snapshot("canary", 0, T0))
    assert fields == {
        "current_state": "canary",
        "entered_at": codec.timestamp(T0),
        "counter:canary": "0",
        "counter:fleet": "5",
    }
    assert codec.decode_snapshot(chart, fields) == Snapshot("canary", 0, T0)


def test_decode_missing_hash_is_none(chart: Chart) -> None:
    assert codec.decode_snapshot(chart, {}) is None


def test_decode_missing_counter_uses_the_start_value(chart: Chart) -> None:
    snap = codec.decode_snapshot(chart, {"current_state": "fleet", "entered_at": codec.timestamp(T0)})
    assert snap == Snapshot("fleet", 5, T0)


def test_decode_missing_entered_at_is_the_epoch(chart: Chart) -> None:
    snap = codec.decode_snapshot(chart, {"current_state": "canary"})
    assert snap is not None
    assert snap.entered_at == datetime.fromtimestamp(0, UTC)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"entered_at": "2030-01-01T00:00:00Z"}, "current_state"),
        ({"current_state": "canary", "entered_at": "yesterday"}, "entered_at"),
        ({"current_state": "canary", "counter:canary": "two"}, "counter:canary"),
    ],
)
def test_decode_corrupt_fields_name_the_key_and_field(chart: Chart, fields: dict[str, str], needle: str) -> None:
    with pytest.raises(CorruptState) as info:
        codec.decode_snapshot(chart, fields)
    assert needle in info.value.message
    assert "stateservice:{release}" in info.value.message
    assert info.value.status == 500


HISTORY_FIELDS = ("at", "from", "to", "cause", "host")  # the fixed history shape; more fields are welcome


@pytest.mark.parametrize("host", ["web-1", None])
def test_transition_round_trip(host: str | None) -> None:
    move = Transition("release", "canary", "fleet", "put", T0, host)
    fields = codec.encode_transition(move)
    assert all(isinstance(v, str) for v in fields.values())  # a stream entry holds strings only
    assert {k: fields[k] for k in HISTORY_FIELDS} == {
        "at": "2030-01-02T03:04:05.678901Z",
        "from": "canary",
        "to": "fleet",
        "cause": "put",
        "host": host or "",
    }
    record = codec.decode_history("1-0", fields)
    assert record["id"] == "1-0"
    assert {k: record[k] for k in HISTORY_FIELDS} == {
        "at": "2030-01-02T03:04:05.678901Z",
        "from": "canary",
        "to": "fleet",
        "cause": "put",
        "host": host,
    }


def test_a_stored_definition_parses_back_into_the_chart(chart: Chart) -> None:
    fields = codec.encode_definition(chart, T0)
    assert fields[keys.DEFINITION_REGISTERED_AT] == "2030-01-02T03:04:05.678901Z"
    again = codec.parse_definition(chart.name, fields, UTC).unwrap()
    assert (again.name, again.digest, again.path, again.states) == (chart.name, chart.digest, chart.path, chart.states)


def test_a_stored_definition_without_a_path_is_named_by_the_chart(chart: Chart) -> None:
    fields = {**codec.encode_definition(chart, T0), keys.DEFINITION_PATH: ""}
    assert codec.parse_definition(chart.name, fields, UTC).path == chart.name


def test_reset_from_nothing_has_no_from_state() -> None:
    fields = codec.encode_transition(Transition("release", "", "canary", "reset", T0))
    assert codec.decode_history("1-0", fields)["from"] is None
