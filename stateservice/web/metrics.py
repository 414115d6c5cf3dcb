"""`GET /metrics` and the middleware that counts every request (see `stateservice/metrics.py`).

The middleware is the outermost one, so it sees the final status of every answer, errors
included (401/403 from auth, 413 from limits, the JSON errors `middleware.handle` renders).
Requests are labelled by the route's canonical path (`/charts/{chart}/state`), never the
raw path, so label cardinality stays bounded; a path no route matches is `unmatched`.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from stateservice import metrics

CLIENT_GONE = "499"  # the client hung up before the answer (nginx's convention)


def route_of(request: web.Request) -> str:
    """The matched route's canonical path, or `unmatched`."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else metrics.UNMATCHED


@web.middleware
async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the request and time it, whatever it ends in."""
    started = time.perf_counter()
    status: int | str = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
    finally:
        metrics.request(route_of(request), request.method, status, time.perf_counter() - started)


async def serve_metrics(request: web.Request) -> web.Response:
    """Every worker's metrics in the Prometheus text format."""
    body, content_type = await asyncio.to_thread(metrics.exposition)
    return web.Response(body=body, headers={"Content-Type": content_type})
