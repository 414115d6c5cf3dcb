"""structlog setup: one event per line, JSON in production, readable in a terminal.

`configure` runs once in `cli.main`. Records from the standard library's logging (aiohttp,
asyncio, redis-py) go through the same renderer, so every line of a worker has one shape.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import structlog

FORMATS = ("json", "console")
LEVELS = ("debug", "info", "warning", "error")


def _add_pid(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # with --workers N, several processes write to one stream: the pid tells them apart
    event.setdefault("pid", os.getpid())
    return event


class _UtcStamp:
    """`timestamp` as `TimeStamper(fmt="iso", utc=True)` writes it, the seconds formatted once a second.

    A worker logs a line per request; formatting a datetime for each was a visible part of that line's cost.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        micros = int((now - second) * 1_000_000)
        event["timestamp"] = f"{self._prefix}.{micros:06d}Z" if micros else f"{self._prefix}Z"
        return event


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
    if _C_ENCODE is not None:
        try:
            return "".join(_C_ENCODE(event, 0))
        except RecursionError:
            pass  # a value that contains itself: the plain encoder says so (ValueError), as before
    return _ENCODER.encode(event)


def configure(fmt: str = "json", level: str = "info") -> None:
    """Route structlog and stdlib logging to stderr as JSON (`json`) or coloured text (`console`)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _UtcStamp(),
        _add_pid,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # one write per line (print() writes the newline separately): workers share one stderr pipe
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        # each module's logger binds once, not on every call (configure runs once, in `cli.main`, before any logging)
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=shared))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
