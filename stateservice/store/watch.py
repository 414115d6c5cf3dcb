"""Long-poll wake-ups: one Redis subscription per worker, however many requests wait.

Every transaction that moves a chart publishes on `stateservice:{CHART}:moves`; the worker's
single pattern subscription reads that chart once, after the message, and hands the state it
read to every request that was waiting before the read was sent (5,000 woken long-polls cost
one read and one wake-up each, not two); one that began waiting during the read is woken to
read for itself. A lost message strands nobody: waiters also re-read on their own every few
seconds, and all are woken whenever the subscription (re)connects; behind Sentinel it reconnects when the
sentinels name another master. On a Redis Cluster each (re)connection
subscribes on the next master (`ClusterRedis.pubsub`): a classic PUBLISH reaches every node,
so any one master hears every chart, and a dead one is left behind within about a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice.core.chart import Snapshot
from stateservice.store import keys

log = structlog.get_logger(__name__)

Reader = Callable[[str], Awaitable[Snapshot | None]]


class MoveWatcher:
    """`read(chart)`: the chart's state now (None when it is no longer served); without it waiters read themselves."""

    def __init__(self, redis: Redis, read: Reader | None = None) -> None:
        self.redis = redis
        self.closing = False
        self._read = read
        self._waiting: dict[str, set[asyncio.Future[Snapshot | None]]] = {}
        self._reads: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def waiters(self) -> int:
        return sum(len(futures) for futures in self._waiting.values())

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="move-watcher")

    async def wait(self, chart: str, timeout: float) -> Snapshot | None:
        """Wait until `chart` moves (or may have), `timeout` passes or the worker stops.

        Returns the chart's state read after the move's message, or None: read it yourself (the
        timeout passed, the subscription reconnected, the read failed, the worker is stopping).
        A bare future and one timer (not `asyncio.wait_for`, which adds a future, a callback and
        a loop iteration to every wake-up): when a gate opens, thousands of these wake at once.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Snapshot | None] = loop.create_future()
        waiting = self._waiting.setdefault(chart, set())
        waiting.add(future)
        timer = loop.call_later(timeout, _settle, future, None)
        try:
            return await future
        finally:
            timer.cancel()
            waiting.discard(future)
            if not waiting and self._waiting.get(chart) is waiting:
                del self._waiting[chart]

    def wake(self, chart: str | None = None) -> None:
        """Wake the waiters of `chart`, or all of them, to read for themselves."""
        groups = self._waiting.values() if chart is None else [self._waiting.get(chart, set())]
        for futures in groups:
            for future in futures:
                _settle(future, None)

    def moved(self, chart: str) -> None:
        """`chart` moved: read it once for its waiters (see the module doc), or wake them to read."""
        if not self._waiting.get(chart):
            return
        if self._read is None:
            self.wake(chart)
            return
        task = asyncio.create_task(self._read_for(chart, list(self._waiting[chart])), name="move-read")
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read_for(self, chart: str, woken: list[asyncio.Future[Snapshot | None]]) -> None:
        snap: Snapshot | None = None
        try:
            assert self._read is not None
            snap = await self._read(chart)
        except Exception as exc:  # each waiter then reads for itself and answers the error
            log.debug("move_read_failed", chart=chart, error=str(exc) or type(exc).__name__)
        for future in woken:
            _settle(future, snap)
        self.wake(chart)  # those that began waiting meanwhile may have read before the move

    async def close(self) -> None:
        """Stop listening and wake every waiter, which then sees `closing` (the worker is stopping)."""
        self.closing = True
        self.wake()
        for read in list(self._reads):
            read.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)

    async def _listen(self) -> None:
        pattern = keys.chart_channel("*")
        prefix, suffix = pattern.split("*")
        # a Sentinel pool says when the master moved away from a connection (see store/sentinel.py)
        stale = getattr(getattr(self.redis, "connection_pool", None), "is_stale", None)
        # `closing` as well as cancellation: a cancel inside a Redis read can surface as TimeoutError
        while not self.closing:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.psubscribe(pattern)
                    self.wake()  # anything may have moved while we were not listening
                    while not self.closing:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            channel = str(message["channel"])
                            self.moved(channel[len(prefix) : -len(suffix)])
                        elif stale is not None and stale(pubsub.connection):
                            break  # the sentinels named another master: subscribe there
            except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
                log.debug("move_watcher_disconnected", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)


def _settle(future: asyncio.Future[Snapshot | None], snap: Snapshot | None) -> None:
    if not future.done():
        future.set_result(snap)
