"""create_app(charts, redis_url) -> web.Application, with a cleanup context per resource.

Building the application does no I/O; Redis is connected in its cleanup context when the
application starts and closed when it stops, so tests and workers build it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, tzinfo

from aiohttp import web

from stateservice.core.chart import Chart
from stateservice.scheduler import Scheduler, identity
from stateservice.store.charts import ChartStore
from stateservice.store.connect import connect
from stateservice.store.lease import Lease
from stateservice.store.registrar import Registrar
from stateservice.web import middleware
from stateservice.web.keys import CHARTS, REDIS, REGISTRAR, SCHEDULER, STORE
from stateservice.web.routes import setup_routes

MAX_BODY = 1024 * 1024


def create_app(
    charts: Sequence[Chart],
    redis_url: str,
    *,
    zone: tzinfo = UTC,
    lease_ttl: float = 5.0,
    scheduler: bool = True,
) -> web.Application:
    """The HTTP application serving `charts`, keeping their state in the Redis at `redis_url`.

    With `scheduler`, this worker competes for the leader lease and, while it holds it,
    advances due time states (`zone` reads naive times of charts other services registered).
    """
    app = web.Application(middlewares=[middleware.handle], client_max_size=MAX_BODY)
    app[CHARTS] = {chart.name: chart for chart in charts}

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        redis = connect(redis_url)
        app[REDIS] = redis
        app[STORE] = ChartStore(redis)
        app[REGISTRAR] = Registrar(app[STORE])
        await app[REGISTRAR].try_all(app[CHARTS].values())
        yield
        await redis.aclose()

    async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
        lease = Lease(app[REDIS], lease_ttl, identity(), os.getpid())
        app[SCHEDULER] = Scheduler(app[STORE], lease, app[CHARTS], zone, interval=min(0.5, lease_ttl / 4))
        task = asyncio.create_task(app[SCHEDULER].run(), name="scheduler")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):  # Redis may be gone at shutdown: the lease then just expires
            await app[SCHEDULER].stop()

    app.cleanup_ctx.append(redis_ctx)
    if scheduler:
        app.cleanup_ctx.append(scheduler_ctx)
    setup_routes(app)
    return app
