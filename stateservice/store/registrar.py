"""Each worker registers its charts in Redis once, before it first serves them.

Registration (`ChartStore.register`) records the chart's definition and creates or carries
over its state. A worker started while Redis is down cannot do that yet, so it registers on
the first request that finds Redis back: until then that request answers 503, as any
request does during an outage, and the worker needs no restart.
A chart is known by name and digest, so a chart reloaded with a changed file registers again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice.core.chart import Chart
from stateservice.errors import StateServiceError
from stateservice.store.charts import ChartStore

log = structlog.get_logger(__name__)


class Registrar:
    def __init__(self, store: ChartStore) -> None:
        self.store = store
        self._done: set[tuple[str, str]] = set()  # (name, digest)
        self._lock = asyncio.Lock()

    async def ensure(self, chart: Chart) -> None:
        """Register `chart` unless this worker already has. Raises what `ChartStore.register` raises."""
        if (chart.name, chart.digest) in self._done:
            return
        async with self._lock:
            if (chart.name, chart.digest) not in self._done:
                snap = await self.store.register(chart)
                self._done.add((chart.name, chart.digest))
                log.info("chart_registered", chart=chart.name, state=snap.state, digest=chart.digest[:12])

    async def try_all(self, charts: Iterable[Chart]) -> None:
        """Register what can be registered now; what cannot is retried by the next request."""
        for chart in charts:
            try:
                await self.ensure(chart)
            except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
                log.warning("redis_unavailable_at_start", chart=chart.name, error=str(exc) or type(exc).__name__)
                return
            except StateServiceError as exc:
                log.error("chart_not_registered", chart=chart.name, error=exc.message)
