"""create_app(config, loaded) -> web.Application, with a cleanup context per resource.

Building the application does no I/O; Redis is connected in its cleanup context when the
application starts and closed when it stops, so tests and workers build it the same way: from
the Config (the settings) and what start-up loaded from disk (`Loaded`: charts, tokens, models).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from stateservice.config import Config
from stateservice.core.chart import Chart, Snapshot
from stateservice.core.machines import Configuration
from stateservice.errors import StartupError, StoreUnavailable
from stateservice.models.cache import ModelCache
from stateservice.scheduler import Scheduler, identity
from stateservice.scheduler.notify import Notifier
from stateservice.security.tokens import Tokens, TokensRef
from stateservice.store.announce import Announcer
from stateservice.store.approvals import Approvals
from stateservice.store.charts import ChartStore
from stateservice.store.lease import Lease
from stateservice.store.machine_approvals import MachineApprovals
from stateservice.store.machines import Machines, define_file
from stateservice.store.redis.connect import connect
from stateservice.store.redis.replicated import replicated
from stateservice.store.registrar import Registrar
from stateservice.store.rollout import Rollouts
from stateservice.store.stream import StreamConsumer, reader_for
from stateservice.store.watch import MoveWatcher
from stateservice.web import auth, middleware
from stateservice.web.appkeys import (
    APPROVALS,
    BODY_LIMIT,
    CHARTS,
    MACHINE_APPROVALS,
    MACHINES,
    MAX_WAIT,
    MODELS,
    REDIS,
    REDIS_DEADLINE,
    REGISTRAR,
    ROLLOUTS,
    SCHEDULER,
    STORE,
    WATCHER,
    ZONE,
)
from stateservice.web.routes import setup_routes

log = structlog.get_logger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


@dataclass(frozen=True, slots=True)
class Loaded:
    """What start-up read from disk for the application: its charts, the tokens, the models' cache."""

    charts: Sequence[Chart] = ()
    tokens: Tokens | None = None  # None: no authentication
    models: ModelCache | None = None  # None: no models (POST /state answers 404)
    registered: frozenset[tuple[str, str]] = frozenset()  # (name, digest) of charts registered before the fork
    configurations: tuple[Configuration, ...] = ()  # from files, for each worker to define (the preflight could not)


def create_app(config: Config, loaded: Loaded, *, scheduler: bool = True) -> web.Application:
    """The HTTP application serving `loaded.charts`, keeping their state in the Redis at `config.redis_url`.

    With `scheduler`, this worker competes for the leader lease and, while it holds it, advances due
    time states (tests turn it off so that nothing but their requests moves a chart). `loaded.tokens`
    (None: no authentication) are checked on every request but the probes. Raises ValueError without
    `config.redis_url` (`server.supervisor.redis_for` finds the embedded one's).
    """
    if config.redis_url is None:
        raise ValueError("create_app needs config.redis_url: the embedded Redis is found by redis_for")
    # the first middleware is the outermost: auth's 401/403 pass through handle, which renders them as JSON
    # and counts every answer with its final status; handle also applies the size limits, and names the
    # caller itself when there are no tokens (each layer is paid by every request)
    ref = TokensRef(loaded.tokens) if loaded.tokens is not None else None
    app = web.Application(
        middlewares=[middleware.handle, *([auth.middleware(ref)] if ref is not None else [])],
        client_max_size=config.max_body,
    )
    if ref is not None:
        app[auth.TOKENS] = ref
    app[CHARTS] = {chart.name: chart for chart in loaded.charts}
    app[MAX_WAIT] = config.max_wait
    app[ZONE] = config.zone()
    app[MODELS] = loaded.models if loaded.models is not None else ModelCache([])
    app[BODY_LIMIT] = config.max_body
    app[REDIS_DEADLINE] = config.redis_deadline
    app[auth.AUTH_ON] = loaded.tokens is not None
    app.cleanup_ctx.append(_redis_ctx(config.redis_url, config, loaded.registered, loaded.configurations))
    if config.stream:
        app.cleanup_ctx.append(_stream_ctx(config.redis_url, config))
    app.cleanup_ctx.append(_models_ctx)
    app.on_shutdown.append(_stop_waiting)
    if scheduler:
        app.cleanup_ctx.append(_scheduler_ctx(config))
    setup_routes(app)
    return app


def _redis_ctx(
    url: str, config: Config, registered: frozenset[tuple[str, str]], configurations: tuple[Configuration, ...]
) -> CleanupContext:
    """Redis, the chart store over it, the registrar (trusting `registered`) and the watcher of chart moves."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        redis = connect(url, cluster=config.redis_cluster)
        app[REDIS] = redis
        writes = replicated(redis, config.redis_wait_replicas, config.redis_wait_timeout)
        app[STORE] = ChartStore(writes, coalesce=config.coalesce, retention=config.event_retention)
        app[ROLLOUTS] = Rollouts(app[STORE])
        retention = timedelta(seconds=config.event_retention)
        app[APPROVALS] = Approvals(app[STORE], app[CHARTS], retention, config.zone())
        app[REGISTRAR] = Registrar(app[STORE], registered)
        app[MACHINES] = Machines(
            writes,
            app[STORE].clock,
            retention=config.event_retention,
            history_limit=config.history_limit,
            cluster=config.redis_cluster,
        )
        app[MACHINE_APPROVALS] = MachineApprovals(app[MACHINES])
        app[WATCHER] = MoveWatcher(redis, read=functools.partial(_read_chart, app))
        announcer = Announcer(redis, app[STORE], app[WATCHER])
        await app[REGISTRAR].try_all(app[CHARTS].values())
        defining = asyncio.create_task(define_all(app[MACHINES], configurations), name="define_configurations")
        app[WATCHER].start()
        announcer.start()
        yield
        await announcer.close()
        defining.cancel()
        await app[WATCHER].close()
        await app[MACHINES].close()
        await app[STORE].close()
        log.info("store_stats", transactions=app[STORE].commits, retries=app[STORE].retries)
        await redis.aclose()

    return ctx


async def define_all(machines: Machines, configurations: tuple[Configuration, ...], retry: float = 0.5) -> None:
    """The configuration files' configurations, when the preflight found no Redis: retried until Redis answers
    (meanwhile this worker serves the rest); one that can never be defined (defined differently, a guard that
    names nothing) is logged and left."""
    files = {c.ref: c for c in configurations}
    pending, delay = list(configurations), retry
    while pending:
        try:
            await define_file(machines, pending[0], files)
        except StartupError as refused:
            log.error("configuration_not_defined", configuration=pending[0].ref, error=refused.message)
        except (RedisError, OSError, StoreUnavailable) as exc:
            log.warning(
                "configuration_define_retry", configuration=pending[0].ref, error=str(exc) or type(exc).__name__
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        pending.pop(0)


def _stream_ctx(url: str, config: Config) -> CleanupContext:
    """This worker's consumer of the events stream (after app[MACHINES] exists, stopped before it closes)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        consumer = StreamConsumer(
            app[MACHINES], reader_for(url, cluster=config.redis_cluster), claim_after=config.stream_claim_after
        )
        consumer.start()
        yield
        await consumer.close()

    return ctx


async def _read_chart(app: web.Application, name: str) -> Snapshot | None:
    chart = app[CHARTS].get(name)  # the definition served now (a SIGHUP may have reloaded it)
    return None if chart is None else await app[STORE].current_state(chart)


async def _models_ctx(app: web.Application) -> AsyncIterator[None]:
    app[MODELS].start()
    yield
    await app[MODELS].close()


async def _stop_waiting(app: web.Application) -> None:
    # on shutdown, before in-flight requests are awaited: long-polls answer 503 at once
    await app[WATCHER].close()


def _scheduler_ctx(config: Config) -> CleanupContext:
    """The leader lease and, while this worker holds it, the scheduler of due time states."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        lease = Lease(app[REDIS], config.lease_ttl, identity(), os.getpid())
        interval = min(0.5, config.lease_ttl / 4)
        app[SCHEDULER] = Scheduler(
            app[STORE],
            lease,
            app[CHARTS],
            config.zone(),
            interval=interval,
            approvals=app[APPROVALS],
            notifier=Notifier(app[STORE], config.public_url),
            machine_approvals=app[MACHINE_APPROVALS],
        )
        task = asyncio.create_task(app[SCHEDULER].run(), name="scheduler")
        yield
        app[SCHEDULER].halted = True
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        with contextlib.suppress(Exception):  # Redis may be gone at shutdown: the lease then just expires
            await app[SCHEDULER].stop()

    return ctx
