"""Typed keys for what the application holds (`app[STORE]`), shared by app, handlers and later features."""

from __future__ import annotations

from datetime import tzinfo

from aiohttp import web
from redis.asyncio import Redis

from stateservice.core.chart import Chart
from stateservice.models.cache import ModelCache
from stateservice.scheduler import Scheduler
from stateservice.store.approvals import Approvals
from stateservice.store.charts import ChartStore
from stateservice.store.machine_approvals import MachineApprovals
from stateservice.store.machines import Machines
from stateservice.store.registrar import Registrar
from stateservice.store.rollout import Rollouts
from stateservice.store.watch import MoveWatcher

CHARTS = web.AppKey("charts", dict[str, Chart])
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", ChartStore)
ROLLOUTS = web.AppKey("rollouts", Rollouts)
APPROVALS = web.AppKey("approvals", Approvals)  # continuations of the charts' approval states
MACHINE_APPROVALS = web.AppKey("machine_approvals", MachineApprovals)  # continuations of instances' approvals
MACHINES = web.AppKey("machines", Machines)  # configurations, instances and their events
ZONE = web.AppKey("zone", tzinfo)  # the server's time zone: deployment windows of charts without their own
REGISTRAR = web.AppKey("registrar", Registrar)
SCHEDULER = web.AppKey("scheduler", Scheduler)
WATCHER = web.AppKey("watcher", MoveWatcher)
MAX_WAIT = web.AppKey("max_wait", float)
MODELS = web.AppKey("models", ModelCache)
BODY_LIMIT = web.AppKey("body_limit", int)
REDIS_DEADLINE = web.AppKey("redis_deadline", float)  # seconds: see web/deadline.py
