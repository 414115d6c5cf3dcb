"""`GET /metrics`, and what `middleware.handle` labels each counted request with (see `telemetry/metrics.py`).

`middleware.handle` is the outermost middleware and counts every request with its final
status, errors included (401/403 from auth, 413 from limits, the JSON errors it renders).
Requests are labelled by the route's canonical path (`/charts/{chart}/state`), never the
raw path, so label cardinality stays bounded; a path no route matches is `unmatched`.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from stateservice.telemetry import metrics

CLIENT_GONE = "499"  # the client hung up before the answer (nginx's convention)


def route_of(request: web.Request) -> str:
    """The matched route's canonical path, or `unmatched`."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else metrics.UNMATCHED


async def serve_metrics(request: web.Request) -> web.Response:
    """Every worker's metrics in the Prometheus text format."""
    body, content_type = await asyncio.to_thread(metrics.exposition)
    return web.Response(body=body, headers={"Content-Type": content_type})
