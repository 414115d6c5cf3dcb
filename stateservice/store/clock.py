"""One clock for the fleet: Redis server time (`TIME`).

Service hosts' clocks may be skewed; Redis's is the one every worker on every machine shares.
Asking Redis on every request would cost a round trip, so the clock samples `TIME` now and
then and adds the measured offset to the local clock in between.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from redis.asyncio import Redis

Clock = Callable[[], Awaitable[datetime]]


class RedisClock:
    def __init__(self, redis: Redis, resample: float = 5.0) -> None:
        self.redis = redis
        self.resample = resample
        self._offset = 0.0
        self._sampled = float("-inf")

    async def now(self) -> datetime:
        """Redis server time, as an aware UTC datetime (within a round trip's half of it)."""
        if time.monotonic() - self._sampled > self.resample:
            before = time.time()
            seconds, micros = await self.redis.time()
            after = time.time()
            self._offset = seconds + micros / 1e6 - (before + after) / 2
            self._sampled = time.monotonic()
        return datetime.fromtimestamp(time.time() + self._offset, UTC)


def local_clock() -> Clock:
    """The local clock, for tools and tests that have no Redis to ask."""

    async def now() -> datetime:
        return datetime.now(UTC)

    return now
