"""Each worker registers its charts in Redis once, before it first serves them.

Registration (`ChartStore.register`) records the chart's definition and creates or carries
over its state. A worker started while Redis is down cannot do that yet, so it registers on
the first request that finds Redis back: until then that request answers 503, as any
request does during an outage, and the worker needs no restart.
A chart is known by name and digest, so a chart reloaded with a changed file registers again.
Charts that `serve` registered before forking count as registered in every worker (`registered`):
repeating that work cost a second pass over every chart at start-up.
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
    def __init__(self, store: ChartStore, registered: Iterable[tuple[str, str]] = ()) -> None:
        """`registered`: the (name, digest) pairs already registered in this Redis (by `serve`'s preflight)."""
        self.store = store
        self._done: set[tuple[str, str]] = set(registered)  # (name, digest)
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

    async def ensure_many(self, charts: Iterable[Chart]) -> list[tuple[Chart, StateServiceError]]:
        """`ensure` for many charts in few round trips (`ChartStore.register_many`); the charts' errors, if any.

        Raises Redis' errors: nothing is marked registered then, and the next call tries again.
        """
        todo = [chart for chart in charts if (chart.name, chart.digest) not in self._done]
        if not todo:
            return []
        errors: list[tuple[Chart, StateServiceError]] = []
        async with self._lock:
            results = await self.store.register_many(todo)
            for chart, result in zip(todo, results, strict=True):
                if isinstance(result, StateServiceError):
                    errors.append((chart, result))
                    continue
                self._done.add((chart.name, chart.digest))
                log.info("chart_registered", chart=chart.name, state=result.state, digest=chart.digest[:12])
        return errors

    async def try_all(self, charts: Iterable[Chart]) -> None:
        """Register what can be registered now; what cannot is retried by the next request."""
        try:
            errors = await self.ensure_many(charts)
        except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
            log.warning("redis_unavailable_at_start", error=str(exc) or type(exc).__name__)
            return
        for chart, error in errors:
            log.error("chart_not_registered", chart=chart.name, error=error.message)
