"""Advances time states promptly: the worker holding the leader lease checks every chart twice a second.

It also times out approval states (the same way: a due move), makes sure each approval state a
chart waits in has its continuation, and sends their notifications (`notify.py`); for instances'
approval states it times out the continuations that are due and sends their notifications.

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
from stateservice.scheduler.notify import Notifier
from stateservice.store.approvals import Approvals
from stateservice.store.charts import ChartStore
from stateservice.store.definitions import StoredCharts
from stateservice.store.lease import Lease
from stateservice.store.machine_approvals import MachineApprovals
from stateservice.telemetry import metrics

log = structlog.get_logger(__name__)

_TIMED = (Func.TIME, Func.APPROVAL)


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
        approvals: Approvals | None = None,
        notifier: Notifier | None = None,
        machine_approvals: MachineApprovals | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.charts = charts
        self.zone = zone
        self.interval = interval
        self.approvals = approvals
        self.notifier = notifier
        self.machine_approvals = machine_approvals
        self.leading = False
        self.halted = False
        self.stored = StoredCharts(store, zone)  # other services' charts

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
                if not leading and self.notifier is not None:
                    await self.notifier.drop()
            self.leading = leading
            metrics.leader(leading)
            if leading:
                await self.tick()
        except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
            if self.leading:
                log.warning("leader_unsure", error=str(exc) or type(exc).__name__)
                if self.notifier is not None:
                    await self.notifier.drop()
            self.leading = False  # renew (or re-acquire) once Redis answers again
            metrics.leader(False)
            metrics.redis_error()

    async def tick(self) -> None:
        """Advance every registered chart whose current time state (or approval's timeout) is due."""
        charts = []
        for name in await self.store.registered():
            chart = self.charts.get(name) or await self.stored.get(name)
            # only these fall due: a chart without them is moved by reports alone, never by the clock
            if chart is not None and any(state.func in _TIMED for state in chart.states):
                charts.append(chart)
        # one pipelined read a batch of charts; a transaction only for those with a due move
        waiting = []
        for chart, result in zip(charts, await self.store.current_states(charts), strict=True):
            if isinstance(result, StateServiceError):
                log.warning("chart_not_advanced", chart=chart.name, error=result.message)
            elif (state := chart.state(result.state)) is not None and state.func is Func.APPROVAL:
                waiting.append(chart)
        for chart in waiting:
            await self.suspend(chart)
        await self.instances()

    async def instances(self) -> None:
        """Time out the instances' continuations that are due, and send the notifications that are."""
        if self.machine_approvals is None:
            return
        try:
            due = await self.machine_approvals.due()
        except StateServiceError as exc:
            log.warning("instance_approvals_not_checked", error=exc.message)
            return
        now = await self.machine_approvals.machines.clock()
        for waiting in due:
            configuration = await self.machine_approvals.machines.configuration(waiting.configuration)
            approval = configuration.approval(waiting.state) if configuration is not None else None
            if self.notifier is not None and approval is not None and approval.notify is not None:
                self.notifier.consider_instance(self.machine_approvals, waiting, approval.notify, now)

    async def suspend(self, chart: Chart) -> None:
        """A chart waits in an approval state: its continuation made, findable by id, and notified."""
        if self.approvals is None:
            return
        try:
            _, pending = await self.approvals.ensure(chart)
        except StateServiceError as exc:
            log.warning("approval_not_checked", chart=chart.name, error=exc.message)
            return
        if pending is None:
            return
        await self.approvals.own(pending)  # a worker that died between its commit and the owner's expiry
        if self.notifier is not None:
            self.notifier.consider(chart, pending, await self.store.clock())

    async def stop(self) -> None:
        if self.notifier is not None:
            await self.notifier.close()
        if self.leading:
            await self.lease.release()
            self.leading = False
            log.info("leader_released")
            metrics.leader(False)
