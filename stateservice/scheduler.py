"""Advances time states promptly: the worker holding the leader lease checks every chart twice a second.

Correctness never rests on this task: every read of a chart applies the time moves that are
due (see `store/charts.py`). The leader only makes a move happen within a second of its due
time for charts nobody is asking about. It advances every chart registered in this Redis,
including charts other services serve (read from their stored definitions), and gives the
lease up when its worker stops, so that another takes over at once.
"""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import tzinfo

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice.core.chart import Chart, Func
from stateservice.errors import StateServiceError
from stateservice.store import codec, keys
from stateservice.store.charts import ChartStore
from stateservice.store.lease import Lease
from stateservice.telemetry import metrics

log = structlog.get_logger(__name__)


def identity() -> str:
    """This worker's name in the lease and in `GET /leader`: `<hostname>:<pid>`."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Scheduler:
    def __init__(
        self,
        store: ChartStore,
        lease: Lease,
        charts: dict[str, Chart],
        zone: tzinfo,
        *,
        interval: float = 0.5,
    ) -> None:
        self.store = store
        self.lease = lease
        self.charts = charts
        self.zone = zone
        self.interval = interval
        self.leading = False
        self.halted = False
        self._parsed: dict[str, Chart] = {}  # other services' charts, by digest

    async def run(self) -> None:
        """Hold or seek the lease, and while holding it advance due charts; until cancelled."""
        # a flag as well as cancellation: a cancel that lands inside a Redis call with a timeout
        # can surface as TimeoutError, which `step` treats as an outage and keeps going
        while not self.halted:
            await self.step()
            await asyncio.sleep(self.interval if self.leading else self.interval * 2)

    async def step(self) -> None:
        try:
            # a lease found gone on renewal (it expired while this worker was paused, or a failover
            # lost it) is taken again at once if it is free, not a whole interval later
            leading = (self.leading and await self.lease.renew()) or await self.lease.acquire()
            if leading != self.leading:
                log.info("leader_acquired" if leading else "leader_lost")
            self.leading = leading
            metrics.leader(leading)
            if leading:
                await self.tick()
        except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
            if self.leading:
                log.warning("leader_unsure", error=str(exc) or type(exc).__name__)
            self.leading = False  # renew (or re-acquire) once Redis answers again
            metrics.leader(False)
            metrics.redis_error()

    async def tick(self) -> None:
        """Advance every registered chart whose current time state is due."""
        charts = []
        for name in await self.store.registered():
            chart = self.charts.get(name) or await self._stored(name)
            # only a time state falls due: a chart without one is moved by reports alone, never by the clock
            if chart is not None and any(state.func is Func.TIME for state in chart.states):
                charts.append(chart)
        # one pipelined read a batch of charts; a transaction only for those with a due move
        for chart, result in zip(charts, await self.store.current_states(charts), strict=True):
            if isinstance(result, StateServiceError):
                log.warning("chart_not_advanced", chart=chart.name, error=result.message)

    async def stop(self) -> None:
        if self.leading:
            await self.lease.release()
            self.leading = False
            log.info("leader_released")
            metrics.leader(False)

    async def _stored(self, name: str) -> Chart | None:
        definition = await self.store.definition(name)
        digest = definition.get(keys.DEFINITION_DIGEST, "")
        if definition.get(keys.DEFINITION_SOURCE) is None:
            return None
        if digest not in self._parsed:
            result = codec.parse_definition(name, definition, self.zone)
            if result.chart is None:
                log.warning("stored_chart_unreadable", chart=name, problems=[str(p) for p in result.errors])
                return None
            self._parsed[digest] = result.chart
        return self._parsed[digest]
