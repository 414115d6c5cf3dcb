"""Events to instances over HTTP (issue #15): applied once per event_id, and their stored outcomes.

    POST /statemachines/{id}/events                apply an event (report scope)
    POST /events                                   the same, addressed by `dest` or configuration + properties
    GET  /statemachines/{id}/events/{event_id}     the stored outcome of an event

A refusal is an outcome too: kept under its event_id and answered again, with the same status
and `"duplicate": true`, when the event is sent again. Checks of the body and of a token's
`charts` list are those of `web/machines.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from stateservice.core.machines import EVENT, EVENT_ID, details_problem, event_id_problem, originator_problem
from stateservice.errors import (
    BadRequest,
    EventRefused,
    InvalidField,
    InvalidName,
    MissingField,
    RequirementNotMet,
    StateServiceError,
    TransitionNotAllowed,
    UnknownConfiguration,
    UnknownEvent,
    UnknownInstance,
)
from stateservice.store.machines import Event, Outcome
from stateservice.store.stream_entry import MALFORMED, UNKNOWN_CONFIGURATION
from stateservice.telemetry import logs, metrics
from stateservice.web.deadline import redis_deadline
from stateservice.web.handlers import who
from stateservice.web.machines import (
    ID_RULE,
    allow,
    allow_instance,
    id_field,
    json_object,
    machines_of,
    only_fields,
    path_id,
    properties_field,
    ref_field,
)

EVENT_FIELDS = frozenset({"event", "event_id", "originator", "details"})
# an outcome's keys in the order answers show them (the script's JSON encoder keeps no order)
OUTCOME_ORDER = ("event_id", "outcome", "instance", "configuration", "event", "from", "to", "at", "state")


async def post_instance_event(request: web.Request) -> web.Response:
    """Apply an event to the instance of the path, once per event_id: 200, or its refusal (409/404)."""
    instance = path_id(request)
    body = await json_object(request)
    only_fields(body, EVENT_FIELDS)
    event = _event(request, body, instance=instance)
    async with redis_deadline(request):
        await allow_instance(request, instance)
        return await _answer(request, await machines_of(request).apply(event))


async def post_event(request: web.Request) -> web.Response:
    """An event addressed in its body: `dest` (an id), or configuration + properties (made on first use)."""
    body = await json_object(request)
    only_fields(body, EVENT_FIELDS | {"dest", "configuration", "properties"})
    if "dest" in body:
        if "configuration" in body or "properties" in body:
            raise BadRequest("give dest, or configuration and properties, not both", field="dest")
        event = _event(request, body, instance=id_field(body["dest"], "dest"))
    else:
        ref = ref_field(body, '{"dest": ID} or {"configuration": "NAME:VERSION", "properties": {...}}')
        properties = properties_field(body.get("properties"))
        allow(request, ref)
        event = _event(request, body, ref=ref, properties=properties)
    async with redis_deadline(request):
        if event.ref is None:
            await allow_instance(request, event.target())
        else:
            await machines_of(request).require(event.ref)  # else the event would answer unknown_instance
        return await _answer(request, await machines_of(request).apply(event))


def _event(request: web.Request, body: Mapping[str, Any], **target: Any) -> Event:
    if "event" not in body:
        raise MissingField("event", '{"event": NAME}')
    name = body["event"]
    if not isinstance(name, str) or not EVENT.fullmatch(name):
        raise InvalidField("event", f"event {str(name)[:80]!r} is not an event name ({ID_RULE})")
    event_id = body.get("event_id", str(uuid.uuid4()))
    if (problem := event_id_problem(event_id)) is not None:
        raise InvalidField("event_id", problem)
    originator = body.get("originator", who(request).actor)
    if (problem := originator_problem(originator)) is not None:
        raise InvalidField("originator", problem)
    details = body.get("details")
    if details is not None and (problem := details_problem(orjson.dumps(details))) is not None:
        raise InvalidField("details", problem)
    logs.bind(event=name, event_id=event_id)
    return Event(name, event_id, originator=originator, details=details, **target)


async def _answer(request: web.Request, outcome: Outcome) -> web.Response:
    """The outcome as HTTP: 200 when applied, else its error; a duplicate says so and answers as the first did."""
    body = ordered(outcome.body)
    if outcome.duplicate:
        body["duplicate"] = True
    kind = str(body.get("outcome"))
    metrics.events("duplicate" if outcome.duplicate else kind, "http")
    if kind == "ok":
        return web.json_response(body)
    raise await _refusal(request, kind, body)


async def _refusal(request: web.Request, kind: str, body: dict[str, Any]) -> StateServiceError:
    """The error a kept refusal answers. The kinds are the event script's, and those the stream consumer keeps for
    the entries it dead-letters (an event_id sent first on the stream and again over HTTP answers them); any other
    (a newer version's) answers 409 with the kept body as it is."""
    if kind == "unknown_instance":
        return UnknownInstance(str(body.pop("instance", "")), **body)
    if kind == MALFORMED:
        return BadRequest.kept(str(body.pop("message", "the event was malformed")), **body)
    if kind == UNKNOWN_CONFIGURATION:
        return UnknownConfiguration.kept(str(body.pop("message", "its configuration is not defined")), **body)
    ref, state, event = body.get("configuration"), body.get("state"), body.get("event")
    known = kind in ("transition_not_allowed", "requirement_not_met")
    if not (known and isinstance(ref, str) and isinstance(state, str) and isinstance(event, str)):
        return EventRefused(body)
    configuration = await machines_of(request).configuration(ref)
    if configuration is None:
        return EventRefused(body)  # removed by an operator since
    if kind == "requirement_not_met":
        transition = configuration.moves(event).get(state)
        requires = transition.requires if transition is not None else None
        return RequirementNotMet(body, requires.document() if requires is not None else {})
    return TransitionNotAllowed(body, configuration.allowed(state))


async def get_event(request: web.Request) -> web.Response:
    """The stored outcome of an event (kept --event-retention), whatever it was: 200; 404 unknown_event."""
    instance = path_id(request)
    event_id = request.match_info["event_id"]
    if not EVENT_ID.fullmatch(event_id):
        raise InvalidName(f"{event_id[:80]!r} is not an event id", parameter="event_id")
    async with redis_deadline(request):
        await allow_instance(request, instance)
        outcome = await machines_of(request).outcome(instance, event_id)
    if outcome is None:
        raise UnknownEvent(instance, event_id)
    return web.json_response(ordered(outcome))


def ordered(outcome: Mapping[str, Any]) -> dict[str, Any]:
    """The outcome with its keys in OUTCOME_ORDER, then any others."""
    first = {k: outcome[k] for k in OUTCOME_ORDER if k in outcome}
    return {**first, **{k: v for k, v in outcome.items() if k not in first}}
