"""Fixtures of the integration tests: the application on a real server, services as subprocesses, and Redis
as an operator sees it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import TCPConnector
from redis.asyncio import Redis

from stateservice.config import Config
from stateservice.core.chart import Chart
from stateservice.dashboard import setup as setup_dashboard
from stateservice.security.tokens import Tokens
from stateservice.store.redis.connect import connect
from stateservice.web.app import Loaded, create_app
from tests.support.app import Client, MakeClient
from tests.support.service import Services


@pytest.fixture
def serve(aiohttp_client: Any, redis_url: str) -> MakeClient:
    """`await serve(*charts, tokens=None, scheduler=True, unlimited=False, handler_cancellation=None, dashboard=False,
    **settings)`: a real server and its client.

    `settings` are fields of Config (e.g. `coalesce=False`); `tokens` and `scheduler` go to `create_app`;
    `unlimited` lifts the client's connection cap (tests that hold hundreds of requests open);
    `handler_cancellation` sets the server's, as the runner does (True; the default with `dashboard`, whose event
    streams end when their client hangs up); `dashboard` adds the dashboard's pages, as the server does.
    """

    async def make(
        *charts: Chart,
        tokens: Tokens | None = None,
        scheduler: bool = True,
        unlimited: bool = False,
        handler_cancellation: bool | None = None,
        dashboard: bool = False,
        **settings: Any,
    ) -> Client:
        config = Config(redis_url=redis_url, timezone="UTC", **settings)
        app = create_app(config, Loaded(charts, tokens), scheduler=scheduler)
        if dashboard:
            setup_dashboard(app)
        kwargs: dict[str, Any] = {}
        if unlimited:
            kwargs["connector"] = TCPConnector(limit=0)
        if handler_cancellation is None and dashboard:
            handler_cancellation = True
        if handler_cancellation is not None:
            kwargs["server_kwargs"] = {"handler_cancellation": handler_cancellation}
        client: Client = await aiohttp_client(app, **kwargs)
        return client

    return make


@pytest.fixture
async def plain(redis_url: str) -> AsyncIterator[Redis]:
    """A plain Redis client: what an operator with redis-cli sees and does."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def plain_sync(redis_url: str) -> Iterator[redis.Redis]:
    """`plain` for tests that are not async: what redis-cli sees, never through a GET that would move a chart."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[Callable[[], Redis]]:
    """`make()`: a client of its own, as a separate worker process would have."""
    made: list[Redis] = []

    def make() -> Redis:
        client = connect(redis_url)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """`services.start(chart, ...)`: `stateservice serve` subprocesses, all killed at teardown (see Services)."""
    made = Services(tmp_path)
    yield made
    made.cleanup()
