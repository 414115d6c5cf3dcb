"""Gate checks that wait: `GET /state?state=X&wait=SECONDS` answers as soon as X is current.

The waiting request re-reads its chart when the worker's subscription says the chart moved
(`store/watch.py` reads it once for all its waiters), when a time state it waits behind
falls due, and every few seconds in any case, so that neither a lost message nor a silent
leader strands it. Otherwise it sleeps: a client that hangs up cancels its handler (the
runner turns on aiohttp's handler cancellation), which removes its waiter at once, so there
is nothing to poll for (without handler cancellation, the next re-check notices the closed
connection). The wait itself touches no Redis; each read the long-poll makes has the request's
Redis deadline (`web/deadline.py`), so a Redis that stalls meanwhile answers 503 as promptly.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime

from aiohttp import web

from stateservice.core import rules
from stateservice.core.chart import Chart, Snapshot
from stateservice.errors import BadRequest, NotCurrent, ServiceStopping
from stateservice.store.charts import ChartStore
from stateservice.store.watch import MoveWatcher
from stateservice.web.deadline import redis_deadline

RECHECK = 5.0  # seconds between reads when nothing is heard
RETRY_AFTER_DEFAULT = 5  # seconds, on a 406 when nothing says when the gate may open


def wait_param(request: web.Request, max_wait: float) -> float:
    """`wait=SECONDS` (0 when absent). Raises BadRequest for a bad value or one over `max_wait`."""
    raw = request.query.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= max_wait:  # also refuses nan and inf
        raise BadRequest(
            f"wait={raw[:20]!r} must be a number of seconds from 0 to {max_wait:g}", parameter="wait", max_wait=max_wait
        )
    return seconds


def retry_after(chart: Chart, snap: Snapshot, now: datetime) -> str:
    """When to ask again: until the current time state falls due, else the default.

    Not until an approval's timeout: a person may answer in a minute, and a host told to come back
    in a day would sleep through it.
    """
    current = chart.state(snap.state)
    due = rules.next_due(chart, snap) if current is not None and current.approval is None else None
    if due is None:
        return str(RETRY_AFTER_DEFAULT)
    return str(max(1, math.ceil((due - now).total_seconds())))


async def refused(store: ChartStore, chart: Chart, snap: Snapshot, exc: NotCurrent) -> NotCurrent:
    exc.headers["Retry-After"] = retry_after(chart, snap, await store.clock())
    return exc


async def wait_until_current(
    request: web.Request, store: ChartStore, watcher: MoveWatcher, chart: Chart, state: str, wait: float
) -> None:
    """Return once `state` is current; raise NotCurrent (with Retry-After) when `wait` seconds pass first."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + wait
    async with redis_deadline(request):
        snap = await store.current_state(chart)
    while True:
        rules.refuse_halted(chart, snap)  # a halt while waiting ends the wait: 409, so automation stops
        if snap.state == state:
            return
        now = loop.time()
        async with redis_deadline(request):
            if now >= ends:
                raise await refused(store, chart, snap, NotCurrent(chart.name, state, snap.state))
            due = rules.next_due(chart, snap) if chart.state(snap.state) else None
            until_due = (due - await store.clock()).total_seconds() + 0.01 if due else math.inf
        # whatever ends the wait (a move, the re-check, the end of the wait, a time state falling due) calls for a
        # read: after a move's message, the watcher's own (one for all the chart's waiters)
        read = await watcher.wait(chart.name, max(0.0, min(ends - now, RECHECK, until_due)))
        if watcher.closing:
            raise ServiceStopping()
        if request.transport is None or request.transport.is_closing():
            # the client went away, and nothing cancelled us (a runner without handler cancellation)
            raise asyncio.CancelledError()
        if read is not None and chart.state(read.state):
            snap = read
        else:
            async with redis_deadline(request):
                snap = await store.current_state(chart)
