"""structlog setup: one event per line, JSON in production, readable in a terminal.

`configure` runs once in `cli.main`. Records from the standard library's logging (aiohttp,
asyncio, redis-py) go through the same renderer, so every line of a worker has one shape.

A worker writes a line per request, so the line's cost is a visible part of a request's
(measured by bench/run.py's `--log-level warning` variant). Hence: the request's context
lives in one ContextVar (`bind`/`clear`/`merge`, the semantics of structlog.contextvars
without copying the whole context per event), level, time and pid are added in one step,
and JSON lines go to stderr's byte buffer, skipping the text layer.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from types import MappingProxyType
from typing import Any

import structlog

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


_pid = os.getpid()  # several workers write to one stream: the pid tells them apart


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)  # once, however often `configure` runs


class _Stamp:
    """`level`, `timestamp` (as `TimeStamper(fmt="iso", utc=True)` writes it) and `pid`, in one processor.

    The seconds are formatted once a second; the pid is the one read at import or after the last fork.
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
        event.setdefault("pid", _pid)
        return event


def _exc_info(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog's format_exc_info, skipped for the events (nearly all) that carry no exception."""
    if "exc_info" not in event:
        return event
    return structlog.processors.format_exc_info(logger, method, event)


def _fallback(value: Any) -> Any:
    """What JSON cannot hold, as structlog's own renderer writes it."""
    custom = getattr(value, "__structlog__", None)
    return custom() if callable(custom) else repr(value)


_ENCODER = json.JSONEncoder(default=_fallback)
try:
    # the C encoder `json.dumps` uses, built once (dumps with `default=` builds an encoder and a C encoder per
    # call, a third of a request line's cost); no circular-reference markers: a log event is a flat dict
    _C_ENCODE: Any = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _fallback, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
except (AttributeError, TypeError):  # a Python without the C accelerator
    _C_ENCODE = None


def _dumps(event: Any, **_: Any) -> str:
    """`event` exactly as `json.dumps(event, default=...)` writes it."""
    if _C_ENCODE is None:
        return _ENCODER.encode(event)
    try:
        return "".join(_C_ENCODE(event, 0))
    except RecursionError:  # a value that contains itself: the plain encoder says so (ValueError), as before
        return _ENCODER.encode(event)


def _dumps_bytes(event: Any, **_: Any) -> bytes:
    return _dumps(event).encode()  # ASCII: non-ASCII characters are escaped, as json.dumps does


def configure(fmt: str = "json", level: str = "info") -> None:
    """Route structlog and stdlib logging to stderr as JSON (`json`) or coloured text (`console`)."""
    shared: list[Any] = [merge, _Stamp()]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    factory: Any = structlog.WriteLoggerFactory(sys.stderr)
    last: Any = renderer
    binary = getattr(sys.stderr, "buffer", None)
    if fmt == "json" and binary is not None:
        # stderr is line-buffered and flushed per line, like this writer, so lines keep their order
        sys.stderr.flush()
        factory, last = structlog.BytesLoggerFactory(binary), structlog.processors.JSONRenderer(serializer=_dumps_bytes)
    structlog.configure(
        processors=[*shared, _exc_info, last],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # one write per line (print() writes the newline separately): workers share one stderr pipe
        logger_factory=factory,
        # each module's logger binds once, not on every call (configure runs once, in `cli.main`, before any logging)
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=shared))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
