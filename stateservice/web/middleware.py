"""Per-request log context, the access log line, and the one place errors become HTTP answers.

Every error body has one shape: `{"error": code, "message": text, "status": n, ...}`.
`StateServiceError` answers with its own status; Redis being unreachable answers 503 with
`Retry-After`; anything unexpected is logged once with its traceback and answers a 500
that reveals nothing of the internals.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice.errors import HTTPRefused, InternalError, StateServiceError, StoreUnavailable
from stateservice.telemetry import logs, metrics
from stateservice.web import auth, limits
from stateservice.web.prometheus import CLIENT_GONE, route_of

log = structlog.get_logger(__name__)

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


class _RequestIds:
    """Request ids for requests that bring none: 32 hex digits, a random per-process prefix and a counter.

    Unique across workers and restarts like a uuid4, without reading the OS's random source per request.
    """

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)  # forked workers must not share the parent's prefix

    def _reseed(self) -> None:
        self._prefix = os.urandom(10).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


_ids = _RequestIds()


def error_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _answer(error: StateServiceError) -> web.Response:
    """The JSON answer to an error of ours; a 503 asks the caller to come back in a second."""
    headers = {"Retry-After": "1"} if error.status == 503 else {}
    return error_response(error.status, error.body(), {**headers, **error.headers})


def _from_http(exc: web.HTTPException, request: web.Request) -> web.Response:
    headers: dict[str, str] = {}
    message = exc.reason
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(set(exc.allowed_methods) | {"OPTIONS"})
        headers["Allow"] = ", ".join(allowed)
        message = f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}"
    elif exc.status == 404:
        message = f"no such endpoint: {request.path}"
    elif exc.text and not exc.text.startswith(f"{exc.status}:"):
        message = exc.text
    return error_response(exc.status, HTTPRefused(exc.status, message).body(), headers)


def _options(request: web.Request) -> web.Response | None:
    """OPTIONS on a known path: 204 with `Allow` (we route no OPTIONS handler, so the router says 405)."""
    exc = request.match_info.http_exception
    if request.method != "OPTIONS" or not isinstance(exc, web.HTTPMethodNotAllowed):
        return None
    return web.Response(status=204, headers={"Allow": ", ".join(sorted(set(exc.allowed_methods) | {"OPTIONS"}))})


@web.middleware
async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the request's log context, refuse it if oversized, answer it (errors as JSON), count it, log a line.

    The outermost middleware, so the count and the line see the final status of every answer
    (401/403 from auth, 413 from limits, each error rendered here); a client that hangs up
    first is counted as 499 (nginx's convention).
    """
    given = request.headers.get("X-Request-ID")
    request_id = given if given and REQUEST_ID.fullmatch(given) else _ids.next()
    if request.app[auth.AUTH_ON]:  # auth's middleware binds the identity once it knows it
        logs.clear(request_id=request_id, method=request.method, path=request.path)
    else:
        logs.clear(request_id=request_id, method=request.method, path=request.path, identity=auth.anonymous(request))
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        limits.check(request)
        response = _options(request) or await handler(request)
    except web.HTTPException as exc:
        response = _from_http(exc, request)
    except StateServiceError as exc:
        response = _answer(exc)
    except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
        log.warning("redis_unavailable", error=str(exc) or type(exc).__name__)
        metrics.redis_error()
        response = _answer(StoreUnavailable())
    except asyncio.CancelledError:
        metrics.request(route_of(request), request.method, CLIENT_GONE, time.perf_counter() - started)
        log.info("request_cancelled")  # the client went away
        raise
    except Exception:
        log.exception("unhandled_error")
        response = _answer(InternalError())
    response.headers["X-Request-ID"] = request_id
    seconds = time.perf_counter() - started
    metrics.request(route_of(request), request.method, response.status, seconds)
    log.info(
        "request",
        status=response.status,
        duration_ms=round(seconds * 1000, 2),
        remote=request.remote,
        query=request.query_string or None,
    )
    return response
