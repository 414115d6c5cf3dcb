"""Whether any live dashboard listens, anywhere: so that changes that move nothing are published only then.

A report that moves nothing, a slot taken or released, a failure: the dashboard wants to hear of
each (`stateservice:{CHART}:changed`), but a fleet nobody watches should not pay a PUBLISH per
report (on a Redis Cluster a classic PUBLISH reaches every node). A worker with an open event
stream keeps the key `stateservice:dashboard:watching` alive (a TTL, renewed well within it);
every worker looks at it once a second and sets `ChartStore.announcing`. A page that opens
hears the changes other workers make from within about a second (its first read shows what was
before); moves are always published, on their own channel.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from stateservice.store import keys
from stateservice.store.charts import ChartStore
from stateservice.store.watch import MoveWatcher

log = structlog.get_logger(__name__)

TTL = 30  # seconds the key outlives the last worker that listened (one that died without a word)


class Announcer:
    def __init__(self, redis: Redis, store: ChartStore, watcher: MoveWatcher, interval: float = 1.0) -> None:
        self.redis = redis
        self.store = store
        self.watcher = watcher
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()
        self._closing = False
        watcher.on_listen = self._listened

    def _listened(self) -> None:
        # this worker's own changes are announced at once; the key, for the others, at the next turn, now
        self.store.announcing = True
        self._woken.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="announce")

    async def close(self) -> None:
        # a flag as well as the cancel: redis-py can turn a cancel inside a read into a TimeoutError (a RedisError),
        # which the loop takes for an outage and goes on
        self._closing = True
        self._woken.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        renewed = -float("inf")
        loop = asyncio.get_running_loop()
        while not self._closing:
            here = self.watcher.listening
            try:
                if here and loop.time() - renewed > TTL / 3:
                    await self.redis.set(keys.dashboard_watching(), "1", ex=TTL)
                    renewed = loop.time()
                elsewhere = bool(await self.redis.exists(keys.dashboard_watching()))
            except (RedisError, OSError):  # as it was: the next look, once Redis answers, decides
                elsewhere = self.store.announcing
            if not here:
                renewed = -float("inf")
            if self.store.announcing != (here or elsewhere):
                log.debug("dashboard_announcing", on=here or elsewhere)
            self.store.announcing = here or elsewhere or self.watcher.listening
            self._woken.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for returns, not raises, when a cancel comes with the wake
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._woken.wait()
