"""structlog setup: one event per line, JSON in production, readable in a terminal.

`configure` runs once in `cli.main`. Records from the standard library's logging (aiohttp,
asyncio, redis-py) go through the same renderer, so every line of a worker has one shape.

A worker writes a line per request, so the line's cost is a visible part of a request's
(measured by bench/run.py's `--log-level warning` variant). Hence: the request's context
lives in one ContextVar (`bind`/`clear`/`merge`, the semantics of structlog.contextvars
without copying the whole context per event), level, time and pid are added in one step,
orjson writes the JSON (compact, UTF-8), and lines go to stderr's byte buffer, skipping the
text layer.

The write itself (a system call per line) cost more than making the line, so `info` and
`debug` lines logged inside a running event loop are written together at the loop's next
step (`perprocess.NextTurn`): a busy worker writes tens of lines per call, 5,000 woken
long-polls a few hundred calls. A `warning` or worse, a line from outside a loop and
`flush()` (the end of every `eventloop.run` and of the process) write everything held at
once, in order; a forked child starts with nothing held (its parent writes what it held).
Each write holds whole lines and at most PIPE_BUF bytes, so workers sharing one stderr pipe
never interleave inside a line.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import json
import logging
import select
import sys
import time
from collections.abc import Mapping, MutableMapping
from types import MappingProxyType
from typing import Any

import orjson
import structlog

from stateservice.telemetry import perprocess
from stateservice.telemetry.perprocess import NextTurn

FORMATS = ("json", "console")
LEVELS = ("debug", "info", "warning", "error")


# never changed in place: `bind` and `clear` set a new mapping, so tasks that copied the context keep theirs
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "stateservice_log_context", default=MappingProxyType({})
)


def bind(**values: Any) -> None:
    """Add `values` to every event logged from here on in this context (a request and the tasks it starts)."""
    _CONTEXT.set({**_CONTEXT.get(), **values})


def clear(**values: Any) -> None:
    """Start this context's log context afresh, holding only `values`."""
    _CONTEXT.set(values)


def merge(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The bound context into `event`; what the call itself gives wins."""
    for key, value in _CONTEXT.get().items():
        event.setdefault(key, value)
    return event


_LEVEL_OF = {"warn": "warning", "exception": "error"}


class _Stamp:
    """`level`, `timestamp` (as `TimeStamper(fmt="iso", utc=True)` writes it) and `pid`, in one processor.

    The seconds are formatted once a second; the pid is read once per process (`perprocess.pid`).
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event["level"] = _LEVEL_OF.get(method, method)  # as structlog's add_log_level
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        micros = int((now - second) * 1_000_000)
        event["timestamp"] = f"{self._prefix}.{micros:06d}Z" if micros else f"{self._prefix}Z"
        event.setdefault("pid", perprocess.pid())  # several workers write to one stream: the pid tells them apart
        return event


def _fallback(value: Any) -> Any:
    """What JSON cannot hold, as structlog's own renderer writes it."""
    custom = getattr(value, "__structlog__", None)
    return custom() if callable(custom) else repr(value)


# orjson: a tenth of the standard library encoder's time for an event; compact (`{"a":1}`), UTF-8
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS
# for what orjson refuses (an integer past 64 bits, a value that contains itself), in the same shape
_ENCODER = json.JSONEncoder(default=_fallback, separators=(",", ":"), ensure_ascii=False)


def _dumps_bytes(event: Any) -> bytes:
    try:
        return orjson.dumps(event, default=_fallback, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return _ENCODER.encode(event).encode()  # a value that contains itself: ValueError, as json.dumps says


def _render_bytes(logger: Any, method: str, event: MutableMapping[str, Any]) -> bytes:
    """The last processor: the event as one JSON line (without its newline), its exception formatted first."""
    if "exc_info" in event:  # nearly no event carries one: skip structlog's format_exc_info otherwise
        event = structlog.processors.format_exc_info(logger, method, event)
    return _dumps_bytes(event)


def _render_text(logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
    """`_render_bytes` for a text stream and for the standard library's records."""
    return _render_bytes(logger, method, event).decode()


_WRITE_MAX = getattr(select, "PIPE_BUF", 512)  # POSIX: a pipe write of at most this many bytes is never split


def _write_lines(stream: Any, lines: list[bytes]) -> None:
    """`lines` to `stream` in writes of whole lines, each at most PIPE_BUF bytes (one line longer goes alone)."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) > _WRITE_MAX:
            stream.write(b"".join(chunk))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    stream.write(b"".join(chunk))
    stream.flush()


class LineLogger:
    """A structlog logger (as `structlog.BytesLogger`) that holds its lines for the loop's next turn.

    Warnings and worse are written at once, after everything held before them.
    """

    def __init__(self, lines: NextTurn[bytes]) -> None:
        self._lines = lines

    def msg(self, message: bytes) -> None:
        self._lines.add(message + b"\n")

    def _urgent(self, message: bytes) -> None:
        self._lines.add(message + b"\n", now=True)

    debug = info = log = msg
    warning = warn = error = err = exception = critical = fatal = failure = _urgent


_lines: NextTurn[bytes] | None = None


def flush() -> None:
    """Write every held line now (before a process ends: done at the end of `eventloop.run` and at exit)."""
    if _lines is not None:
        _lines.flush()


atexit.register(flush)


class _StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Records from the standard library's logging, written after every held line (they are warnings or worse)."""

    def emit(self, record: logging.LogRecord) -> None:
        flush()
        super().emit(record)


def configure(fmt: str = "json", level: str = "info") -> None:
    """Route structlog and stdlib logging to stderr as JSON (`json`) or coloured text (`console`)."""
    shared: list[Any] = [merge, _Stamp()]
    renderer: Any = _render_text if fmt == "json" else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    global _lines
    flush()  # lines held for the stream configured before
    _lines = None
    factory: Any = structlog.WriteLoggerFactory(sys.stderr)
    last: Any = renderer
    binary = getattr(sys.stderr, "buffer", None)
    if fmt == "json" and binary is not None:
        # stderr is line-buffered and flushed per line, and `_write_lines` flushes, so lines keep their order
        sys.stderr.flush()
        _lines = NextTurn(functools.partial(_write_lines, binary))
        logger = LineLogger(_lines)
        factory, last = (lambda *_: logger), _render_bytes
    structlog.configure(
        processors=[*shared, last] if fmt == "json" else [*shared, structlog.processors.format_exc_info, last],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # whole lines per write (print() writes the newline separately): workers share one stderr pipe
        logger_factory=factory,
        # each module's logger binds once, not on every call (configure runs once, in `cli.main`, before any logging)
        cache_logger_on_first_use=True,
    )
    handler = _StdlibHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=shared))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
