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

The live dashboard listens too (`listen`): a listener is told, without any read, that a chart it
watches moved or changed (`stateservice:{CHART}:changed`: a report, a slot, a failure that moved
nothing). The subscription takes that second pattern only while a listener exists, so a service
whose dashboard nobody watches receives none of those messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice.core.chart import Snapshot
from stateservice.store import keys

log = structlog.get_logger(__name__)

Reader = Callable[[str], Awaitable[Snapshot | None]]


class Listener:
    """A live view's interest in some charts (`charts` None: every chart): `changed` is set when one moves or
    changes, or when the subscription (re)starts and anything may have; the listener clears it and reads."""

    def __init__(self, charts: Collection[str] | None) -> None:
        self.charts = None if charts is None else frozenset(charts)
        self.changed = asyncio.Event()

    def hears(self, chart: str) -> bool:
        return self.charts is None or chart in self.charts


class MoveWatcher:
    """`read(chart)`: the chart's state now (None when it is no longer served); without it waiters read themselves."""

    def __init__(self, redis: Redis, read: Reader | None = None) -> None:
        self.redis = redis
        self.closing = False
        self._read = read
        self._waiting: dict[str, set[asyncio.Future[Snapshot | None]]] = {}
        self._reads: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._listeners: set[Listener] = set()
        self.on_listen: Callable[[], None] | None = None  # told when a listener comes (store/announce.py)
        self.hearing_changes = asyncio.Event()  # set while the changes' pattern is subscribed

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

    def listen(self, charts: Collection[str] | None = None) -> Listener:
        """A new listener for `charts` (None: every chart); `unlisten` it when done."""
        listener = Listener(charts)
        self._listeners.add(listener)
        if self.on_listen is not None:
            self.on_listen()
        return listener

    @property
    def listening(self) -> bool:
        """Whether a live view listens here now."""
        return bool(self._listeners)

    def unlisten(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def _tell(self, chart: str | None) -> None:
        """Tell the listeners of `chart` (None: all of them) that it may have changed."""
        for listener in self._listeners:
            if chart is None or listener.hears(chart):
                listener.changed.set()

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
        self._tell(None)
        for read in list(self._reads):
            read.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)

    async def _listen(self) -> None:
        moves, changes = keys.chart_channel("*"), keys.chart_changes("*")
        prefix, suffix = moves.split("*")
        # a Sentinel pool says when the master moved away from a connection (see store/sentinel.py)
        stale = getattr(getattr(self.redis, "connection_pool", None), "is_stale", None)
        # `closing` as well as cancellation: a cancel inside a Redis read can surface as TimeoutError
        while not self.closing:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.psubscribe(moves)
                    self.hearing_changes.clear()  # a new connection: the changes' pattern is not subscribed here
                    self.wake()  # anything may have moved while we were not listening
                    self._tell(None)
                    while not self.closing:
                        await self._follow_listeners(pubsub, changes)
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            channel = str(message["channel"])
                            chart = channel[len(prefix) : channel.rindex("}")]  # names hold no braces
                            if channel.endswith(suffix):
                                self.moved(chart)
                            self._tell(chart)
                        elif stale is not None and stale(pubsub.connection):
                            break  # the sentinels named another master: subscribe there
            except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
                log.debug("move_watcher_disconnected", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _follow_listeners(self, pubsub: PubSub, pattern: str) -> None:
        """Subscribe the changes' pattern while someone listens, and only then (see the module doc)."""
        if self._listeners and not self.hearing_changes.is_set():
            await pubsub.psubscribe(pattern)
            self.hearing_changes.set()
            self._tell(None)  # a change may have come before the subscription: look again
        elif not self._listeners and self.hearing_changes.is_set():
            await pubsub.punsubscribe(pattern)
            self.hearing_changes.clear()


def _settle(future: asyncio.Future[Snapshot | None], snap: Snapshot | None) -> None:
    if not future.done():
        future.set_result(snap)
