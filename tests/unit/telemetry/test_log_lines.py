"""JSON lines logged inside an event loop are written together at the loop's next step, in order, whole."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pathlib
import select
import sys
import threading
from collections.abc import Iterator

import pytest
import structlog

from stateservice.server import eventloop
from stateservice.telemetry import logs


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
