"""The JSON log lines: one per event, the shape `json.dumps` gives, an ISO UTC timestamp, context and pid."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from stateservice import logs


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """`logs.configure("json")` writing to a buffer; structlog's and logging's setup restored afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    logs.configure("json", "info")
    try:
        yield buffer
    finally:
        structlog.reset_defaults()
        structlog.configure(**saved)
        root.handlers, root.level = handlers, level
        structlog.contextvars.clear_contextvars()


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_an_event_is_one_line_as_json_dumps_writes_it(stderr: io.StringIO) -> None:
    log = structlog.get_logger("test_logs")  # a logger of this test's own: it is cached with this configuration
    structlog.contextvars.bind_contextvars(request_id="abc", path="/state")

    log.info("request", status=200, duration_ms=1.25, query=None, text="é\nx", nested={"a": [1, True]}, obj=object)

    [line] = lines(stderr)
    event = json.loads(line)
    assert line == json.dumps(event)  # the separators and escapes of the standard library's encoder
    assert event["event"] == "request" and event["level"] == "info" and event["pid"] == os.getpid()
    assert (event["request_id"], event["path"], event["status"], event["duration_ms"]) == ("abc", "/state", 200, 1.25)
    assert event["query"] is None and event["text"] == "é\nx" and event["nested"] == {"a": [1, True]}
    assert event["obj"] == repr(object)  # what JSON cannot hold is written as its repr, as structlog does


def test_the_timestamp_is_iso_utc_with_microseconds_and_current(stderr: io.StringIO) -> None:
    log = structlog.get_logger("test_logs")
    before = datetime.now(UTC)
    for _ in range(3):
        log.info("tick")
    after = datetime.now(UTC)

    stamps = [json.loads(line)["timestamp"] for line in lines(stderr)]
    for stamp in stamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", stamp), stamp
        at = datetime.fromisoformat(stamp)
        assert before - timedelta(microseconds=1) <= at <= after
    assert stamps == sorted(stamps)


def test_a_value_that_contains_itself_is_refused_as_before(stderr: io.StringIO) -> None:
    looped: list[object] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="Circular reference"):
        structlog.get_logger("test_logs").info("loop", value=looped)


def test_stdlib_records_get_the_same_shape(stderr: io.StringIO) -> None:
    logging.getLogger("some.library").warning("careful: %s", "this")
    [line] = lines(stderr)
    event = json.loads(line)
    assert line == json.dumps(event)
    assert (event["event"], event["level"], event["pid"]) == ("careful: this", "warning", os.getpid())
