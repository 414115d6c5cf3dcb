"""Rollout endpoints: concurrency slots, halts and resumes; failure reports arrive on PUT /state (`handlers`).

    PUT    /charts/{chart}/slots/{host}?state=S    take or renew a slot (report scope)
    DELETE /charts/{chart}/slots/{host}?state=S    release it; idempotent (report scope)
    GET    /charts/{chart}/slots[?state=S]         who holds the slots of S (default: the current state)
    POST   /charts/{chart}/halt?reason=R           stop the rollout (admin scope)
    POST   /charts/{chart}/resume                  let it go on (admin scope)
    POST   /charts/{chart}/advance[?reason=R]      move to the next state now (admin scope)
    POST   /charts/{chart}/forget?host=H           forget H's report and failure in this visit (admin scope)

`PUT /slots/{host}` and `DELETE /slots/{host}` name the chart with `?chart=` (or the only one served).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from stateservice.core import rules
from stateservice.core.chart import HOST_NAME, Chart
from stateservice.core.slots import Slot
from stateservice.errors import InvalidName, MissingParameter
from stateservice.store import codec
from stateservice.telemetry import logs
from stateservice.web import auth
from stateservice.web.appkeys import ROLLOUTS, STORE, ZONE
from stateservice.web.deadline import redis_deadline
from stateservice.web.handlers import ALPHABETS, chart_named, name_param, reason_param, state_param, who


def _host(request: web.Request) -> str:
    host = request.match_info["host"]
    if not HOST_NAME.fullmatch(host):
        raise InvalidName(f"host {host[:80]!r} is not a valid host name ({ALPHABETS['host']})", parameter="host")
    return host


def _slot(chart: Chart, state: str, slot: Slot) -> dict[str, Any]:
    return {
        "chart": chart.name,
        "state": state,
        "host": slot.host,
        "granted_at": codec.timestamp(slot.granted_at),
        "expires_at": codec.timestamp(slot.expires_at),
    }


async def take_slot(request: web.Request) -> web.Response:
    """Grant or renew the host's slot: 200 with the slot; 406 no_free_slot (Retry-After) or not_current."""
    async with redis_deadline(request):
        chart = await chart_named(request)
        state, host = state_param(request), _host(request)
        logs.bind(chart=chart.name, state=state, host=host)
        rules.check_window(chart, state, await request.app[STORE].clock(), request.app[ZONE])
        granted = await request.app[ROLLOUTS].acquire(chart, state, host, who(request))
    held = len(granted.holders)
    limit = rules.lookup(chart, state).rollout.concurrency
    body = {**_slot(chart, state, granted.slot), "renewed": granted.renewed, "held": held, "limit": limit}
    return web.json_response(body)


async def release_slot(request: web.Request) -> web.Response:
    """Release the host's slot (200 whether or not it held one)."""
    async with redis_deadline(request):
        chart = await chart_named(request)
        state, host = state_param(request), _host(request)
        logs.bind(chart=chart.name, state=state, host=host)
        released = await request.app[ROLLOUTS].release(chart, state, host, who(request))
    return web.json_response({"chart": chart.name, "state": state, "host": host, "released": released is not None})


async def list_slots(request: web.Request) -> web.Response:
    """The holders of a state's slots, oldest grant first."""
    async with redis_deadline(request):
        chart = await chart_named(request)
        state = state_param(request) if "state" in request.query else None
        held = await request.app[ROLLOUTS].held(chart, state)
    return web.json_response(
        {
            "chart": chart.name,
            "state": held.state,
            "limit": held.limit,
            "held": len(held.slots),
            "slots": [_slot(chart, held.state, slot) for slot in held.slots],
        }
    )


async def halt_chart(request: web.Request) -> web.Response:
    """Halt the chart in its current state: every gate, slot and report answers 409 until it is resumed."""
    async with redis_deadline(request):
        chart = await chart_named(request)
        reason = reason_param(request) or f"halted by {auth.identity(request)}"
        record = await request.app[ROLLOUTS].halt(chart, reason, who(request))
    return web.json_response({"chart": chart.name, "state": record.to_state, "halted": True, "reason": record.reason})


async def resume_chart(request: web.Request) -> web.Response:
    """End a halt (200 whether or not the chart was halted; `resumed` says which)."""
    async with redis_deadline(request):
        chart = await chart_named(request)
        record = await request.app[ROLLOUTS].resume(chart, who(request))
    return web.json_response({"chart": chart.name, "halted": False, "resumed": record is not None})


async def advance_chart(request: web.Request) -> web.Response:
    """Move the chart to its current state's target now (cause `operator`); 409 on a final state."""
    async with redis_deadline(request):
        chart = await chart_named(request)
        move = await request.app[ROLLOUTS].advance(chart, reason_param(request), who(request))
    return web.json_response(
        {"chart": chart.name, "from": move.from_state, "to": move.to_state, "at": codec.timestamp(move.at)}
    )


async def forget_host(request: web.Request) -> web.Response:
    """Forget a host's report and failure in the current visit, so that it may report again."""
    async with redis_deadline(request):
        chart = await chart_named(request)
        host = name_param(request, "host", HOST_NAME, "host")
        if host is None:
            raise MissingParameter("host")
        forgotten = await request.app[ROLLOUTS].forget(chart, host, who(request))
    return web.json_response(
        {
            "chart": chart.name,
            "state": forgotten.state,
            "host": host,
            "report": forgotten.report,
            "failure": forgotten.failure,
        }
    )
