"""telemetry/logs.py: one compact JSON line per event, an ISO UTC timestamp, context and pid; the lines
logged inside an event loop written together at the loop's next step, in order, whole."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pathlib
import re
import select
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from stateservice.server import eventloop
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


# -- lines held until the loop's next step --------------------------------------------------
class Recorder(io.BytesIO):
    """stderr's byte layer, remembering each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return super().write(data)

    def events(self) -> list[str]:
        return [json.loads(line)["event"] for line in self.getvalue().decode().splitlines()]


@pytest.fixture
def out(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    raw = Recorder()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, encoding="utf-8", line_buffering=True))
    logs.configure("json", "info")
    try:
        yield raw
    finally:
        logs.flush()
        structlog.reset_defaults()
        structlog.configure(**saved)
        root.handlers, root.level = handlers, level
        logs.clear()


def test_lines_of_one_loop_step_are_written_together_at_the_next(out: Recorder) -> None:
    log = structlog.get_logger("test_log_lines")

    async def main() -> tuple[list[bytes], list[bytes]]:
        for n in range(5):
            log.info("request", n=n)
        held = list(out.writes)
        await asyncio.sleep(0)  # one loop step
        return held, list(out.writes)

    held, written = asyncio.run(main())
    assert held == []  # nothing written while the step that logged them runs
    assert len(written) == 1 and out.events() == ["request"] * 5
    assert [json.loads(line)["n"] for line in out.getvalue().splitlines()] == [0, 1, 2, 3, 4]


def test_a_warning_writes_what_is_held_first_and_itself_at_once(out: Recorder) -> None:
    log = structlog.get_logger("test_log_lines")

    async def main() -> list[str]:
        log.info("first")
        log.info("second")
        log.warning("third")
        seen = out.events()
        log.info("fourth")
        await asyncio.sleep(0)
        return seen

    assert asyncio.run(main()) == ["first", "second", "third"]
    assert out.events() == ["first", "second", "third", "fourth"]


def test_stdlib_records_come_after_the_lines_held_before_them(out: Recorder) -> None:
    log = structlog.get_logger("test_log_lines")

    async def main() -> None:
        log.info("ours")
        logging.getLogger("some.library").warning("theirs")
        log.info("ours again")

    asyncio.run(main())
    logs.flush()
    assert out.events() == ["ours", "theirs", "ours again"]


def test_each_write_is_whole_lines_of_at_most_pipe_buf_bytes(out: Recorder) -> None:
    log = structlog.get_logger("test_log_lines")

    async def main() -> None:
        for n in range(400):
            log.info("request", n=n, padding="x" * (n % 97))
        await asyncio.sleep(0)

    asyncio.run(main())
    limit = getattr(select, "PIPE_BUF", 512)
    assert len(out.writes) > 1
    assert all(0 < len(chunk) <= limit and chunk.endswith(b"\n") for chunk in out.writes)
    assert [json.loads(line)["n"] for line in out.getvalue().splitlines()] == list(range(400))


def test_lines_of_the_last_loop_step_are_not_lost(out: Recorder) -> None:
    log = structlog.get_logger("test_log_lines")

    async def main() -> None:
        log.info("last words")  # the loop ends before its next step

    eventloop.run(main(), "asyncio")
    assert out.events() == ["last words"]


def test_a_line_outside_a_loop_or_from_a_thread_is_written_at_once(out: Recorder) -> None:
    log = structlog.get_logger("test_log_lines")
    log.info("no loop")
    assert out.events() == ["no loop"]

    async def main() -> list[str]:
        log.info("held")
        thread = threading.Thread(target=lambda: log.info("from a thread"))
        thread.start()
        thread.join()
        return out.events()

    # the thread's line writes what the loop held before it, so the order is the order of logging
    assert asyncio.run(main()) == ["no loop", "held", "from a thread"]


def test_a_new_loop_gets_its_own_flush_when_the_old_one_stopped_with_one_pending(out: Recorder) -> None:
    log = structlog.get_logger("test_log_lines")
    loop = asyncio.new_event_loop()
    loop.call_soon(log.info, "first loop")
    loop.call_soon(loop.stop)  # stops at the end of this step: the flush the line scheduled never runs
    loop.run_forever()
    loop.close()
    assert out.events() == []

    async def main() -> None:
        log.info("second loop")
        await asyncio.sleep(0)

    asyncio.run(main())
    assert out.events() == ["first loop", "second loop"]


def test_a_forked_child_does_not_write_its_parents_held_lines_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    path = tmp_path / "stderr"
    log = structlog.get_logger("test_log_lines")

    async def main() -> int:
        log.info("parent, held at the fork")
        child = os.fork()
        if child == 0:
            try:
                log.info("child")
                logs.flush()
            finally:
                os._exit(0)
        return child

    # one file for both processes, as stderr is
    with open(path, "a", encoding="utf-8", buffering=1) as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        logs.configure("json", "info")
        try:
            child = asyncio.run(main())
            os.waitpid(child, 0)
            logs.flush()
        finally:
            structlog.reset_defaults()
            structlog.configure(**saved)
            root.handlers, root.level = handlers, level
            logs.clear()
    events = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert sorted(events) == ["child", "parent, held at the fork"]
