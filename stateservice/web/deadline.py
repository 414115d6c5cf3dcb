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
import contextlib
import math
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from stateservice.errors import StoreUnavailable
from stateservice.telemetry import metrics
from stateservice.web.appkeys import REDIS_DEADLINE, STORE

log = structlog.get_logger(__name__)


def redis_deadline(request: web.Request) -> contextlib.AbstractAsyncContextManager[None]:
    """The block's Redis calls, all together, within the service's `--redis-deadline`. Raises StoreUnavailable."""
    store = request.app[STORE]
    return within(request.app[REDIS_DEADLINE], lambda: store.heard)


@contextlib.asynccontextmanager
async def within(seconds: float, heard: Callable[[], float] = lambda: -math.inf) -> AsyncIterator[None]:
    """Cancel the block and raise StoreUnavailable once `seconds` pass after the later of its start and `heard()`.

    `heard()` is the loop time Redis last answered. Other errors, and a cancellation from outside, pass unchanged.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(None) as timeout:
            timer: asyncio.TimerHandle | None = None

            def check() -> None:
                nonlocal timer
                due = max(started, heard()) + seconds
                if due <= loop.time():
                    timeout.reschedule(loop.time())  # expire now: cancel the block
                else:
                    timer = loop.call_at(due, check)  # Redis answered meanwhile: count from that answer

            timer = loop.call_at(started + seconds, check)
            try:
                yield
            finally:
                if timer is not None:
                    timer.cancel()
    except TimeoutError:
        if not timeout.expired():
            raise  # a timeout of the block's own
        log.warning("redis_deadline_passed", seconds=seconds)
        metrics.redis_error()
        raise StoreUnavailable(
            f"Redis did not answer within {seconds:g}s (--redis-deadline); retry shortly", deadline=seconds
        ) from None
