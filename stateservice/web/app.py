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

import structlog
from aiohttp import web

from stateservice.core.chart import Chart, Snapshot
from stateservice.models.cache import ModelCache
from stateservice.scheduler import Scheduler, identity
from stateservice.security.tokens import Tokens
from stateservice.store.charts import ChartStore
from stateservice.store.lease import Lease
from stateservice.store.redis.connect import connect
from stateservice.store.redis.replicated import replicated
from stateservice.store.registrar import Registrar
from stateservice.store.watch import MoveWatcher
from stateservice.web import auth, middleware
from stateservice.web.appkeys import BODY_LIMIT, CHARTS, MAX_WAIT, MODELS, REDIS, REGISTRAR, SCHEDULER, STORE, WATCHER
from stateservice.web.routes import setup_routes

log = structlog.get_logger(__name__)

MAX_BODY = 1024 * 1024


def create_app(
    charts: Sequence[Chart],
    redis_url: str,
    *,
    zone: tzinfo = UTC,
    lease_ttl: float = 5.0,
    scheduler: bool = True,
    coalesce: bool = True,
    max_wait: float = 300.0,
    models: ModelCache | None = None,
    max_body: int = MAX_BODY,
    tokens: Tokens | None = None,
    wait_replicas: int = 0,
    wait_timeout: float = 1.0,
    redis_cluster: bool = False,
) -> web.Application:
    """The HTTP application serving `charts`, keeping their state in the Redis at `redis_url`.

    With `scheduler`, this worker competes for the leader lease and, while it holds it,
    advances due time states (`zone` reads naive times of charts other services registered).
    `coalesce` turns group commit of concurrent reports on; `max_wait` caps long-polls.
    `models` answers POST /state (none: it answers 404); `max_body` caps every request body.
    `tokens` (None: no authentication) are checked on every request but the probes.
    `wait_replicas` (0: off): a chart write is acknowledged once that many replicas have it (WAIT `wait_timeout`).
    `redis_cluster`: `redis_url` names a node of a Redis Cluster.
    """
    # the first middleware is the outermost: auth's 401/403 pass through handle, which renders them as JSON
    # and counts every answer with its final status; handle also applies the size limits, and names the
    # caller itself when there are no tokens (each layer is paid by every request)
    ref = auth.TokensRef(tokens) if tokens is not None else None
    app = web.Application(
        middlewares=[middleware.handle, *([auth.middleware(ref)] if ref is not None else [])],
        client_max_size=max_body,
    )
    if ref is not None:
        app[auth.TOKENS] = ref
    app[CHARTS] = {chart.name: chart for chart in charts}
    app[MAX_WAIT] = max_wait
    app[MODELS] = models if models is not None else ModelCache([])
    app[BODY_LIMIT] = max_body
    app[auth.AUTH_ON] = tokens is not None

    async def read_chart(name: str) -> Snapshot | None:
        chart = app[CHARTS].get(name)  # the definition served now (a SIGHUP may have reloaded it)
        return None if chart is None else await app[STORE].current_state(chart)

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        redis = connect(redis_url, cluster=redis_cluster)
        app[REDIS] = redis
        app[STORE] = ChartStore(replicated(redis, wait_replicas, wait_timeout), coalesce=coalesce)
        app[REGISTRAR] = Registrar(app[STORE])
        app[WATCHER] = MoveWatcher(redis, read=read_chart)
        await app[REGISTRAR].try_all(app[CHARTS].values())
        app[WATCHER].start()
        yield
        await app[WATCHER].close()
        await app[STORE].close()
        log.info("store_stats", transactions=app[STORE].commits, retries=app[STORE].retries)
        await redis.aclose()

    async def models_ctx(app: web.Application) -> AsyncIterator[None]:
        app[MODELS].start()
        yield
        await app[MODELS].close()

    async def stop_waiting(app: web.Application) -> None:
        # on shutdown, before in-flight requests are awaited: long-polls answer 503 at once
        await app[WATCHER].close()

    async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
        lease = Lease(app[REDIS], lease_ttl, identity(), os.getpid())
        app[SCHEDULER] = Scheduler(app[STORE], lease, app[CHARTS], zone, interval=min(0.5, lease_ttl / 4))
        task = asyncio.create_task(app[SCHEDULER].run(), name="scheduler")
        yield
        app[SCHEDULER].halted = True
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        with contextlib.suppress(Exception):  # Redis may be gone at shutdown: the lease then just expires
            await app[SCHEDULER].stop()

    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(models_ctx)
    app.on_shutdown.append(stop_waiting)
    if scheduler:
        app.cleanup_ctx.append(scheduler_ctx)
    setup_routes(app)
    return app
