"""Typed keys for what the application holds (`app[STORE]`), shared by app, handlers and later features."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from stateservice.core.chart import Chart
from stateservice.scheduler import Scheduler
from stateservice.store.charts import ChartStore
from stateservice.store.registrar import Registrar

CHARTS = web.AppKey("charts", dict[str, Chart])
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", ChartStore)
REGISTRAR = web.AppKey("registrar", Registrar)
SCHEDULER = web.AppKey("scheduler", Scheduler)
