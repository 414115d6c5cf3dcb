"""create_app(charts, redis_url) -> web.Application, with a cleanup context per resource.

Building the application does no I/O; Redis is connected in its cleanup context when the
application starts and closed when it stops, so tests and workers build it the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from stateservice.core.chart import Chart
from stateservice.store.charts import ChartStore
from stateservice.store.connect import connect
from stateservice.store.registrar import Registrar
from stateservice.web import middleware
from stateservice.web.keys import CHARTS, REDIS, REGISTRAR, STORE
from stateservice.web.routes import setup_routes

MAX_BODY = 1024 * 1024


def create_app(charts: Sequence[Chart], redis_url: str) -> web.Application:
    """The HTTP application serving `charts`, keeping their state in the Redis at `redis_url`."""
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

    app.cleanup_ctx.append(redis_ctx)
    setup_routes(app)
    return app
