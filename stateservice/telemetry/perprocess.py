"""What a worker keeps per process and must keep right across a fork: its pid, and work held for the loop's next turn.

`pid()` is read on every log line and every metric update; `os.getpid()` is a system call
each time, so the pid is read once and again in a forked child.

`NextTurn` holds items (log lines, answered requests) until the running event loop's next
turn and hands them over together: a busy worker answers several requests per turn, and work
done once per turn costs less than the same work between every two requests (logs.py and
metrics.py say what it saves each). An item added outside a running loop (no loop, another
thread) or `now` is handed over at once, after everything held before it, so the order holds.
`flush()` hands over what is held (a loop may stop with its next turn still to come:
`eventloop.run` flushes). A forked child starts with nothing held: its parent hands that over.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_pid = os.getpid()


def pid() -> int:
    """This process's pid (kept by an at-fork hook, not asked of the OS)."""
    return _pid


class NextTurn(Generic[T]):
    """Items handed to `handle` together at the running event loop's next turn (see the module doc)."""

    def __init__(self, handle: Callable[[list[T]], None]) -> None:
        self._handle = handle
        self._held: list[T] = []
        self._lock = threading.Lock()  # items also come from threads (model loads, /metrics)
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop a flush is scheduled on
        _all.add(self)

    def add(self, item: T, now: bool = False) -> None:
        with self._lock:
            self._held.append(item)
            loop = None if now else _running_loop()
            if loop is None:
                self._hand_over()
            elif self._flush_on is not loop:  # also when a loop stopped with its flush still to come
                self._flush_on = loop
                loop.call_soon(self.flush)

    def flush(self) -> None:
        with self._lock:
            self._hand_over()

    def _forked(self) -> None:
        self._lock = threading.Lock()  # one no other thread of the parent holds
        self._held = []
        self._flush_on = None

    def _hand_over(self) -> None:
        self._flush_on = None
        if self._held:
            held, self._held = self._held, []
            self._handle(held)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None  # no loop in this thread: nothing would come back for what is held


_all: weakref.WeakSet[NextTurn[Any]] = weakref.WeakSet()


def _forked() -> None:
    global _pid
    _pid = os.getpid()
    for held in list(_all):
        held._forked()


os.register_at_fork(after_in_child=_forked)
