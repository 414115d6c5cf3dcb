"""One deadline for all of a request's Redis calls, so that a stalled Redis costs a request at most that long.

A handler does its Redis work inside `redis_deadline(request)` (`--redis-deadline`, 1.5 s by
default). The deadline measures Redis's silence, not the worker's load: it passes once that
long has gone by since the later of the block's start and the last answer Redis gave this
worker's chart store (`ChartStore.heard`). A request queued behind its chart's other work while
Redis keeps answering waits its turn, as it always did; once Redis stops answering (a long
fork, a stuck disk, a network black hole), every request waiting on it answers 503
store_unavailable with Retry-After within the deadline, as for a Redis that is down.

The block's work is then cancelled. The connection a cancelled call was reading from is closed
(redis-py closes it, and `ChartStore` drops a transaction's), so no later call reads its stale
reply. Work a request shares with others (a chart's group commit, a shared read) runs in a task
of its own and goes on: only the waiting request gives up. Its report may still be applied,
which is why the answer is 503 (retry; with `host=` a report counts once) and never a 200 or a
406. A long-poll's wait is no Redis work: each read during it has a deadline of its own.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import structlog
from aiohttp import web

from stateservice.errors import StoreUnavailable
from stateservice.telemetry import metrics
from stateservice.web.appkeys import REDIS_DEADLINE, STORE

log = structlog.get_logger(__name__)


def redis_deadline(request: web.Request) -> within:
    """The block's Redis calls, all together, within the service's `--redis-deadline`. Raises StoreUnavailable."""
    store = request.app[STORE]
    return within(request.app[REDIS_DEADLINE], lambda: store.heard)


class within:  # lower case: used as `async with within(...)`, as `asyncio.timeout`
    """Cancel the block and raise StoreUnavailable once `seconds` pass after the later of its start and `heard()`.

    `heard()` is the loop time Redis last answered. Other errors, and a cancellation from outside, pass unchanged.
    Every request that needs Redis enters one, so it is a plain class (one timer, no generator, no
    `asyncio.timeout`), cancelling the task itself the way `asyncio.timeout` does.
    """

    __slots__ = ("_cancelling", "_expired", "_heard", "_loop", "_seconds", "_started", "_task", "_timer")

    def __init__(self, seconds: float, heard: Callable[[], float] = lambda: -math.inf) -> None:
        self._seconds = seconds
        self._heard = heard
        self._expired = False
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("within() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._started = loop.time()
        self._timer = loop.call_at(self._started + self._seconds, self._check)

    def _check(self) -> None:
        due = max(self._started, self._heard()) + self._seconds
        if due <= self._loop.time():
            self._timer = None
            self._expired = True
            self._task.cancel()  # expire now: cancel the block
        else:
            self._timer = self._loop.call_at(due, self._check)  # Redis answered meanwhile: count from that answer

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # as asyncio.timeout: the cancellation is ours alone when no other was asked for meanwhile
        if self._expired and self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
            log.warning("redis_deadline_passed", seconds=self._seconds)
            metrics.redis_error()
            raise StoreUnavailable(
                f"Redis did not answer within {self._seconds:g}s (--redis-deadline); retry shortly",
                deadline=self._seconds,
            ) from None
