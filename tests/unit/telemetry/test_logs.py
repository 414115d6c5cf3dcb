"""The JSON log lines: one per event, compact JSON, an ISO UTC timestamp, context and pid."""

from __future__ import annotations

import asyncio
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

from stateservice.telemetry import logs


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
        logs.clear()


def compact(event: object) -> str:
    """What a line must be: `event` as JSON without spaces, non-ASCII as is."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_an_event_is_one_line_of_compact_json(stderr: io.StringIO) -> None:
    log = structlog.get_logger("test_logs")  # a logger of this test's own: it is cached with this configuration
    logs.bind(request_id="abc", path="/state")

    log.info("request", status=200, duration_ms=1.25, query=None, text="é\nx", nested={"a": [1, True]}, obj=object)

    [line] = lines(stderr)
    event = json.loads(line)
    assert line == compact(event)  # compact, UTF-8 (orjson)
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


def test_what_orjson_refuses_is_written_by_the_standard_library_in_the_same_shape(stderr: io.StringIO) -> None:
    structlog.get_logger("test_logs").info("big", n=2**70, text="é")
    [line] = lines(stderr)
    assert line == compact(json.loads(line)) and json.loads(line)["n"] == 2**70


def test_a_value_that_contains_itself_is_refused_as_before(stderr: io.StringIO) -> None:
    looped: list[object] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="Circular reference"):
        structlog.get_logger("test_logs").info("loop", value=looped)


def test_stdlib_records_get_the_same_shape(stderr: io.StringIO) -> None:
    logging.getLogger("some.library").warning("careful: %s", "this")
    [line] = lines(stderr)
    event = json.loads(line)
    assert line == compact(event)
    assert (event["event"], event["level"], event["pid"]) == ("careful: this", "warning", os.getpid())


def test_the_call_wins_over_the_bound_context_and_clear_starts_afresh(stderr: io.StringIO) -> None:
    log = structlog.get_logger("test_logs")
    logs.clear(request_id="r1", path="/state")
    logs.bind(chart="fleet", path="/charts/fleet/state")
    log.info("one", chart="given")
    logs.clear(request_id="r2")
    log.info("two")

    one, two = (json.loads(line) for line in lines(stderr))
    assert (one["request_id"], one["path"], one["chart"]) == ("r1", "/charts/fleet/state", "given")
    assert two["request_id"] == "r2" and "path" not in two and "chart" not in two


async def test_a_task_keeps_the_context_it_was_started_with(stderr: io.StringIO) -> None:
    log = structlog.get_logger("test_logs")
    logs.clear(request_id="parent")
    started = asyncio.Event()
    go_on = asyncio.Event()

    async def child() -> None:
        logs.bind(step="child")  # its own copy: the parent does not see it
        started.set()
        await go_on.wait()
        log.info("child")

    task = asyncio.create_task(child())
    await started.wait()
    logs.clear(request_id="next")  # the parent moves on to another request
    go_on.set()
    await task
    log.info("parent")

    child_event, parent_event = (json.loads(line) for line in lines(stderr))
    assert (child_event["request_id"], child_event["step"]) == ("parent", "child")
    assert parent_event["request_id"] == "next" and "step" not in parent_event


def test_levels_and_exceptions_as_structlog_writes_them(stderr: io.StringIO) -> None:
    log = structlog.get_logger("test_logs")
    log.warning("careful")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    log.error("bad", exc_info=False)

    careful, failed, bad = (json.loads(line) for line in lines(stderr))
    assert careful["level"] == "warning"
    assert failed["level"] == "error" and "RuntimeError: boom" in failed["exception"] and "exc_info" not in failed
    assert bad["level"] == "error" and "exception" not in bad


def test_json_lines_go_to_stderrs_bytes_in_order_with_stdlib_records(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", line_buffering=True)
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure("json", "info")
    try:
        log = structlog.get_logger("test_logs_bytes")
        log.info("first", text="é")
        logging.getLogger("some.library").warning("second")
        log.info("third")
        stream.flush()
        found = raw.getvalue().decode().splitlines()
    finally:
        structlog.reset_defaults()
        structlog.configure(**saved)
        root.handlers, root.level = handlers, level
        logs.clear()
    events = [json.loads(line) for line in found]
    assert [e["event"] for e in events] == ["first", "second", "third"]
    assert found[0] == compact(events[0]) and events[0]["text"] == "é"
    assert all(e["pid"] == os.getpid() for e in events)


def test_a_forked_worker_logs_its_own_pid(stderr: io.StringIO) -> None:
    log = structlog.get_logger("test_logs")
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: its copy of the buffer goes to the pipe
        try:
            log.info("from the worker")
            os.write(write_end, stderr.getvalue().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        line = pipe.read().decode()
    os.waitpid(child, 0)
    assert json.loads(line)["pid"] == child != os.getpid()
