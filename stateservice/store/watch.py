"""Long-poll wake-ups: one Redis subscription per worker, however many requests wait.

Every transaction that moves a chart publishes on `stateservice:{CHART}:moves`; the worker's
single pattern subscription wakes the requests waiting on that chart, which then re-read
it. A lost message strands nobody: waiters also re-read on their own every few seconds, and
all are woken whenever the subscription (re)connects; behind Sentinel it reconnects when the
sentinels name another master. On a Redis Cluster each (re)connection
subscribes on the next master (`ClusterRedis.pubsub`): a classic PUBLISH reaches every node,
so any one master hears every chart, and a dead one is left behind within about a second.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice.store import keys

log = structlog.get_logger(__name__)


class MoveWatcher:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.closing = False
        self._waiting: dict[str, set[asyncio.Future[bool]]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def waiters(self) -> int:
        return sum(len(futures) for futures in self._waiting.values())

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="move-watcher")

    async def wait(self, chart: str, timeout: float) -> bool:
        """Wait until `chart` moves (or may have) or the worker stops: True; or `timeout` passes: False.

        A bare future and one timer (not `asyncio.wait_for`, which adds a future, a callback and
        a loop iteration to every wake-up): when a gate opens, thousands of these wake at once.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        waiting = self._waiting.setdefault(chart, set())
        waiting.add(future)
        timer = loop.call_later(timeout, _settle, future, False)
        try:
            return await future
        finally:
            timer.cancel()
            waiting.discard(future)
            if not waiting and self._waiting.get(chart) is waiting:
                del self._waiting[chart]

    def wake(self, chart: str | None = None) -> None:
        """Wake the waiters of `chart`, or all of them."""
        groups = self._waiting.values() if chart is None else [self._waiting.get(chart, set())]
        for futures in groups:
            for future in futures:
                _settle(future, True)

    async def close(self) -> None:
        """Stop listening and wake every waiter, which then sees `closing` (the worker is stopping)."""
        self.closing = True
        self.wake()
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
                            self.wake(channel[len(prefix) : -len(suffix)])
                        elif stale is not None and stale(pubsub.connection):
                            break  # the sentinels named another master: subscribe there
            except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
                log.debug("move_watcher_disconnected", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)


def _settle(future: asyncio.Future[bool], woken: bool) -> None:
    if not future.done():
        future.set_result(woken)
