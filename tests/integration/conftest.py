"""Fixtures of the integration tests: the application on a real server, and Redis as an operator sees it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import TCPConnector
from redis.asyncio import Redis

from stateservice.config import Config
from stateservice.core.chart import Chart
from stateservice.security.tokens import Tokens
from stateservice.web.app import Loaded, create_app
from tests.support.app import Client, MakeClient


@pytest.fixture
def serve(aiohttp_client: Any, redis_url: str) -> MakeClient:
    """`await serve(*charts, tokens=None, scheduler=True, unlimited=False, handler_cancellation=None, **settings)`:
    a real server and its client.

    `settings` are fields of Config (e.g. `coalesce=False`); `tokens` and `scheduler` go to `create_app`;
    `unlimited` lifts the client's connection cap (tests that hold hundreds of requests open);
    `handler_cancellation` sets the server's, as the runner does (True).
    """

    async def make(
        *charts: Chart,
        tokens: Tokens | None = None,
        scheduler: bool = True,
        unlimited: bool = False,
        handler_cancellation: bool | None = None,
        **settings: Any,
    ) -> Client:
        config = Config(redis_url=redis_url, timezone="UTC", **settings)
        app = create_app(config, Loaded(charts, tokens), scheduler=scheduler)
        kwargs: dict[str, Any] = {}
        if unlimited:
            kwargs["connector"] = TCPConnector(limit=0)
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
