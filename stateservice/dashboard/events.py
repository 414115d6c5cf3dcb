"""Server-Sent Events: the overview and a chart page as they change, for the pages and for `curl -N`.

    GET /dashboard/events/charts/{chart}   event `chart`: the chart page's model (JSON)
    GET /dashboard/events[?q=&page=]       event `overview`: that overview page's model (JSON)

A stream sends the current model at once, then again each time it changes: the worker's
subscription (`store/watch.py`, the one that wakes long-polls) tells it that a chart it shows
moved or changed, and it reads once. Nothing is read or sent while nothing changes but a
comment every KEEPALIVE seconds, which keeps proxies from closing an idle stream. Each event's
`id` is a digest of its data: a client that reconnects with `Last-Event-ID` (as EventSource
does after a worker restarts; `retry` asks it to after a second) gets the current model only
if it differs from the one it saw. A read that fails sends a `problem` event (the API's error
body; not `error`, which EventSource keeps for its own connection errors) and the stream reads
again at the next keep-alive; when the worker stops, the stream ends and the client reconnects
to another.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from stateservice.dashboard import access, pages, read, view
from stateservice.dashboard.access import Viewer
from stateservice.errors import Forbidden, StateServiceError, StoreUnavailable, Unauthorized
from stateservice.security.tokens import Scope
from stateservice.store.watch import MoveWatcher
from stateservice.web.appkeys import WATCHER

KEEPALIVE = 15.0  # seconds between comments on an idle stream
SUBSCRIBED_WITHIN = 2.0  # seconds a new stream waits for the worker to hear changes before its first event
RETRY_MS = 1000
HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def frame(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    """One SSE message: `event:`, `id:` and one `data:` line of compact JSON."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def streamed(handler: pages.Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An event stream's handler: for a client that asks for text/event-stream (EventSource does), an error before the
    stream starts is a stream too, of one `problem` event. EventSource gives up for good on any other answer, but
    reconnects after this one; the page's script stops on a 401, 403 or 404 problem. Other clients get `pages.page`'s
    answers (the API's JSON errors)."""
    as_page = pages.page(handler)

    async def wrapped(request: web.Request) -> web.StreamResponse:
        if "text/event-stream" not in request.headers.get("Accept", ""):
            return await as_page(request)
        try:
            return await handler(request, await access.viewer(request))
        except access.NotSignedIn:
            return await _refused(request, Unauthorized("sign in on the dashboard again"))
        except StateServiceError as exc:
            return await _refused(request, exc)

    return wrapped


async def _refused(request: web.Request, error: StateServiceError) -> web.StreamResponse:
    response = web.StreamResponse(headers=HEADERS)
    await response.prepare(request)
    await response.write(f"retry: {RETRY_MS}\n\n".encode() + frame("problem", error.body()))
    return response


@streamed
async def chart_events(request: web.Request, who: Viewer) -> web.StreamResponse:
    name = request.match_info["chart"]
    if not who.sees(name):
        raise Forbidden(who.name, Scope.READ.value, name)
    await read.chart_page(request)  # an unknown or malformed chart is refused before the stream starts

    async def build() -> dict[str, Any]:
        shown, _ = await read.chart_page(request)
        return read.page_json(shown)

    return await stream(request, who, "chart", [name], build)


@streamed
async def overview_events(request: web.Request, who: Viewer) -> web.StreamResponse:
    query, number = request.query.get("q", "")[:64], pages.number(request, "page")
    shown = await read.overview_page(request, who, query, number)

    async def build() -> dict[str, Any]:
        return view.overview_json(await read.overview_page(request, who, query, number))

    # the page's charts: a chart added to the page by another's change (a new page order) shows on reload
    charts = None if not shown.charts else [chart.name for chart in shown.charts]
    return await stream(request, who, "overview", charts, build)


async def stream(
    request: web.Request,
    who: Viewer,
    event: str,
    charts: list[str] | None,
    build: Callable[[], Awaitable[dict[str, Any]]],
) -> web.StreamResponse:
    """Send `build()`'s model as `event` now and after each change of `charts`, until the client or worker goes, or
    `who` may no longer look (checked before each send and keep-alive: `access.still`)."""

    async def allowed() -> bool:
        return await access.still(request, who, time.time())

    watcher = request.app[WATCHER]
    listener = watcher.listen(charts)
    response = web.StreamResponse(headers=HEADERS)
    try:
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        with contextlib.suppress(TimeoutError):  # a change meanwhile is told to the listener: nothing is missed
            async with asyncio.timeout(SUBSCRIBED_WITHIN):  # not wait_for: see store/announce.py's
                await watcher.hearing_changes.wait()
        seen = request.headers.get("Last-Event-ID")
        while not watcher.closing and await allowed():
            listener.changed.clear()
            seen, read_ok = await _send(response, event, build, seen)
            await _idle(response, watcher, listener.changed, allowed, retry=not read_ok)
        if not watcher.closing:  # the token was removed or changed, or the session expired: sign in again
            await response.write(frame("problem", Unauthorized("sign in again").body()))
    except ConnectionResetError:
        pass  # the client went away (noticed at a write when the runner does not cancel the handler)
    finally:
        watcher.unlisten(listener)
    return response


async def _send(
    response: web.StreamResponse, event: str, build: Callable[[], Awaitable[dict[str, Any]]], seen: str | None
) -> tuple[str | None, bool]:
    """Send the model if it differs from the one the client has seen; the version it has seen after, and whether the
    read worked."""
    try:
        data = await build()
    except (StateServiceError, RedisError, OSError) as exc:
        error = exc if isinstance(exc, StateServiceError) else StoreUnavailable()
        await response.write(frame("problem", error.body()))
        return seen, False
    version = view.version(data)
    if version != seen:
        await response.write(frame(event, data, version))
    return version, True


async def _idle(
    response: web.StreamResponse,
    watcher: MoveWatcher,
    changed: asyncio.Event,
    allowed: Callable[[], Awaitable[bool]],
    *,
    retry: bool,
) -> None:
    """Wait for a change, writing a keep-alive comment every KEEPALIVE seconds meanwhile (while `allowed()`); after
    a failed read (`retry`), no longer than one keep-alive."""
    while not changed.is_set() and not watcher.closing:
        try:
            async with asyncio.timeout(KEEPALIVE):  # not wait_for: see store/announce.py's
                await changed.wait()
        except TimeoutError:
            if not await allowed():
                return
            await response.write(b": keep-alive\n\n")
            if retry:
                return
