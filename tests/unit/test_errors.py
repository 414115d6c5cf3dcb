"""errors.py and web/middleware.py: the answers built from error classes keep their exact bodies and headers."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError

from stateservice.errors import HTTPRefused, InternalError, StoreUnavailable
from stateservice.web import auth, middleware
from stateservice.web.appkeys import BODY_LIMIT


def test_the_fallback_errors_keep_their_bodies() -> None:
    assert StoreUnavailable().body() == {
        "error": "store_unavailable",
        "message": "Redis is unreachable; retry shortly",
        "status": 503,
    }
    assert InternalError().body() == {
        "error": "internal_error",
        "message": "internal error; see the service log",
        "status": 500,
    }
    assert HTTPRefused(405, "no").body() == {"error": "method_not_allowed", "message": "no", "status": 405}
    assert HTTPRefused(418, "tea").body() == {"error": "http_418", "message": "tea", "status": 418}


async def _redis_down(request: web.Request) -> web.Response:
    raise RedisConnectionError("Connection refused")


async def _bug(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


async def test_the_middleware_answers_outages_and_bugs_as_before(aiohttp_client: Any) -> None:
    app = web.Application(middlewares=[middleware.handle])
    app[auth.AUTH_ON] = False
    app[BODY_LIMIT] = 1024
    app.router.add_get("/down", _redis_down)
    app.router.add_get("/bug", _bug)
    client = await aiohttp_client(app)

    down = await client.get("/down")
    assert (down.status, down.headers["Retry-After"], down.content_type) == (503, "1", "application/json")
    assert await down.text() == (
        '{"error": "store_unavailable", "message": "Redis is unreachable; retry shortly", "status": 503}'
    )

    bug = await client.get("/bug")
    assert (bug.status, "Retry-After" in bug.headers) == (500, False)
    assert (
        await bug.text()
        == '{"error": "internal_error", "message": "internal error; see the service log", "status": 500}'
    )

    missing = await client.get("/nowhere")
    assert await missing.json() == {"error": "not_found", "message": "no such endpoint: /nowhere", "status": 404}
