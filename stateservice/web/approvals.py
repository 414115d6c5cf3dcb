"""Approvals over HTTP (issue #16): what a continuation waits for, resuming it, and the pending ones.

    GET  /continuations/{id}      the continuation: chart, state, context, choices, status (read scope)
    POST /continuations/{id}      resume it with a JSON object (approve or admin scope, for its chart)
    GET  /approvals[?chart=C][&configuration=REF]   the continuations waiting now, oldest first (read scope)

Instances' continuations are `web/machine_approvals.py`'s: each handler sends a continuation
there when its id names an instance's (`machine_approvals.owned`). A token with a `charts` list
may see and resume only its charts' continuations; the check is here, not in `auth.py`, since a
continuation's chart is known only once it is looked up.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from aiohttp import web

from stateservice.core.chart import CHART_NAME, Chart
from stateservice.errors import (
    BadRequest,
    BodyTooLarge,
    ContextTooLarge,
    ContinuationExpired,
    ContinuationUsed,
    Forbidden,
    Halted,
    InvalidName,
    NoChoiceMatched,
    ServiceStopping,
    StateServiceError,
    StoreBusy,
    StoreUnavailable,
    UnknownChart,
    UnknownContinuation,
)
from stateservice.store import keys
from stateservice.store.approvals import Approvals
from stateservice.store.pending import pending_many
from stateservice.telemetry import metrics
from stateservice.web import auth, machine_approvals
from stateservice.web.appkeys import APPROVALS, CHARTS
from stateservice.web.deadline import redis_deadline
from stateservice.web.handlers import chart_named, who
from stateservice.web.machines import json_object
from stateservice.web.machines_openapi import Q_CONFIGURATION
from stateservice.web.openapi import Q_CHART, Operation, Refusal, json_answer
from stateservice.web.suspended import document, has_approvals

log = structlog.get_logger(__name__)

CONTINUATION_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def _approvals(request: web.Request) -> Approvals:
    return request.app[APPROVALS]


def _id(request: web.Request) -> str:
    raw = request.match_info["id"]
    if not CONTINUATION_ID.fullmatch(raw):
        raise BadRequest(
            f"{raw[:40]!r} is not a continuation id (22 characters of A-Z, a-z, 0-9, '-' and '_')",
            parameter="id",
        )
    return raw


def _allow(request: web.Request, chart: str, scope: str) -> None:
    if not auth.visible(request, chart):
        raise Forbidden(auth.identity(request), scope, chart)


async def get_continuation(request: web.Request) -> web.Response:
    continuation = _id(request)
    async with redis_deadline(request):
        if await machine_approvals.owned(request, continuation):
            return await machine_approvals.get_continuation(request, continuation)
        chart = await _approvals(request).owner(continuation)
        _allow(request, chart.name, "read")  # before anything is read or made of another's chart
        pending, context = await _approvals(request).find(chart, continuation)
    return web.json_response(document(chart, pending, context))


async def post_continuation(request: web.Request) -> web.Response:
    """Resume: 200 with the outcome; 409 used, 410 expired, 422 no choice matched (still usable)."""
    continuation = _id(request)
    given = await json_object(request)
    async with redis_deadline(request):
        try:
            outcome = await _resume(request, continuation, given)
        except (ContinuationUsed, ContinuationExpired, NoChoiceMatched) as refused:
            metrics.approval({409: "used", 410: "expired"}.get(refused.status, "no_match"))
            raise
    metrics.approval("resumed")
    return web.json_response({"continuation": continuation, **outcome})


async def _resume(request: web.Request, continuation: str, given: dict[str, Any]) -> dict[str, Any]:
    """Resume a chart's continuation, or an instance's (`web/machine_approvals.py`)."""
    if await machine_approvals.owned(request, continuation):
        return await machine_approvals.resume(request, continuation, given)
    approvals = _approvals(request)
    chart = await approvals.owner(continuation)
    _allow(request, chart.name, "approve")
    caller = who(request)
    return await approvals.resume(continuation, given, caller.actor, caller.remote)


async def list_approvals(request: web.Request) -> web.Response:
    """GET /approvals[?chart=C][&configuration=REF]: the continuations waiting now in the charts (any service's on
    this Redis) and instances the caller may see; with either filter, only what the filters name (a chart's, a
    configuration's instances'). What cannot be read is named in `unreadable`; the rest are still listed."""
    ref = machine_approvals.configuration_filter(request)
    found: list[dict[str, Any]] = []
    unreadable: list[dict[str, Any]] = []
    async with redis_deadline(request):
        if ref is None or "chart" in request.query:
            charts, unreadable = await _charts(request)
            found, broken = await waiting(_approvals(request), [c for c in charts if has_approvals(c)])
            unreadable += broken
        if "chart" not in request.query or ref is not None:
            instances, broken = await machine_approvals.waiting(request, ref)
            found += instances
            unreadable += broken
    found.sort(key=lambda item: (item["created_at"], item.get("chart") or item["instance"]))
    return web.json_response({"approvals": found, "unreadable": unreadable})


async def _charts(request: web.Request) -> tuple[list[Chart], list[dict[str, Any]]]:
    """The charts to list (those served here, and those other services registered in this Redis) that the caller
    may see, and the registered ones whose stored definition this service cannot read."""
    if "chart" in request.query:
        return [await _named(request)], []
    served = request.app[CHARTS]
    names = [n for n in await _approvals(request).store.registered() if n not in served and auth.visible(request, n)]
    charts = [c for c in served.values() if auth.visible(request, c.name)]
    unreadable = []
    for name, other in zip(names, await _approvals(request).stored.get_many(names), strict=True):
        if isinstance(other, Chart):
            charts.append(other)
        elif other is not None:
            message = f"its stored definition ({keys.chart_definition(name)}) cannot be read here: {other}"
            unreadable.append({"chart": name, "error": "unreadable_definition", "message": message})
    return charts, unreadable


async def _named(request: web.Request) -> Chart:
    """`?chart=`'s chart: one served here, or another service's registered in this Redis. Raises InvalidName,
    UnknownChart or Forbidden."""
    name = request.query["chart"]
    if not name:
        raise InvalidName("chart= is empty: name a chart, or leave it out for every chart", parameter="chart")
    other = None
    if name not in request.app[CHARTS] and CHART_NAME.fullmatch(name):
        other = await _approvals(request).stored.get(name)
    chart = other or await chart_named(request)  # served, or 400 / 404
    _allow(request, chart.name, "read")
    return chart


async def waiting(approvals: Approvals, charts: list[Chart]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pending continuation of each chart that waits in an approval state, and the charts that cannot be read
    ({chart, error, message}: a corrupt chart, the others are still listed)."""
    found, unreadable = [], []
    snaps = await approvals.store.current_states(charts)
    readable = [(c, s) for c, s in zip(charts, snaps, strict=True) if not isinstance(s, StateServiceError)]
    results = iter(await pending_many(approvals, readable))
    for chart, snap in zip(charts, snaps, strict=True):
        result = snap if isinstance(snap, StateServiceError) else next(results)
        if isinstance(result, StateServiceError):
            log.warning("approvals_not_listed", chart=chart.name, error=result.message)
            unreadable.append({"chart": chart.name, "error": result.code, "message": result.message})
        elif result is not None:
            found.append(document(chart, *result))
    return found, unreadable


P_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"}}
_UNKNOWN = Refusal((UnknownContinuation,), "no such continuation (or forgotten after --event-retention)")
_UNAVAILABLE = Refusal((StoreUnavailable, ServiceStopping, StoreBusy), "Redis is unreachable or the worker stops")
GET_CONTINUATION = Operation(
    "What a continuation waits for: chart, approval state, context, choices, timeout; status pending, used or expired",
    json_answer({"type": "object"}, "the continuation"),
    [P_ID],
    [Refusal((BadRequest,), "the id is malformed"), _UNKNOWN, _UNAVAILABLE],
)
POST_CONTINUATION = Operation(
    "Resume an approval with a JSON object: merged into the chart's context, the first matching choice (else the "
    "default) is the next state (approve or admin scope)",
    json_answer({"type": "object"}, "resumed: the outcome (from, to, at, actor, input_keys)"),
    [P_ID],
    [
        Refusal((BadRequest,), "the id is malformed or the body is not a JSON object"),
        _UNKNOWN,
        Refusal((ContinuationUsed, Halted), "used already (the body has the first outcome), or the chart is halted"),
        Refusal((ContinuationExpired,), "its timeout passed, or the chart left the state"),
        Refusal((BodyTooLarge, ContextTooLarge), "the body is over --max-body, or the context would be over 64 KiB"),
        Refusal((NoChoiceMatched,), "no choice matches and there is no default: the continuation stays usable"),
        _UNAVAILABLE,
    ],
    body={"type": "object"},
)
UNREADABLE = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "chart": {"type": "string"},
        "instance": {"type": "string"},
        "continuation": {"type": "string"},
        "error": {"type": "string"},
        "message": {"type": "string"},
    },
}
LIST_APPROVALS = Operation(
    "The continuations waiting now, oldest first (of one chart with ?chart=, of one configuration's instances "
    "with ?configuration=)",
    json_answer(
        {
            "type": "object",
            "required": ["approvals", "unreadable"],
            "properties": {
                "approvals": {"type": "array", "items": {"type": "object"}},
                "unreadable": {"type": "array", "items": UNREADABLE},
            },
        },
        "{approvals: [...], unreadable: [...]}: the continuations waiting, and the charts (and instances) whose "
        "approval data cannot be read, each with its error and message (the others are still listed)",
    ),
    [Q_CHART, {**Q_CONFIGURATION, "required": False}],
    [Refusal((BadRequest,), "the chart name is malformed"), Refusal((UnknownChart,), "no such chart"), _UNAVAILABLE],
)
