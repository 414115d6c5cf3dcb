"""Configurations, instances and their events over HTTP (issue #15): parse, ask the Machines store, answer.

    POST /configurations                           define a configuration (admin scope); 201, 409 if it exists
    GET  /configurations[?name=N]                  NAME:VERSION of every configuration (of N)
    GET  /configurations/{name}:{version}          the configuration as posted
    GET  /configurations/{name}:{version}/counts   instances per state
    POST /statemachines                            an instance, by id or by properties (report scope)
    GET  /statemachines?configuration=C[&state=S][&PROP=VALUE...][&limit=N][&cursor=C]   a page of instances
    GET  /statemachines/{id}                       the instance, with its newest history
    POST /statemachines/{id}/events                apply an event once (report scope)
    POST /events                                   the same, addressed by `dest` or configuration + properties
    GET  /statemachines/{id}/events/{event_id}     the stored outcome of an event

A token with a `charts` list may touch only the configurations whose *names* the list holds (and
their instances); the checks are here rather than in `auth.py` because an instance's configuration
is known only once it is read.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from stateservice.core.chart import STATE_NAME
from stateservice.core.machines import EVENT, INSTANCE_ID, NAME, Configuration, Invalid, check_properties, parse_ref
from stateservice.errors import (
    BadRequest,
    BodyTooLarge,
    ForbiddenConfiguration,
    InvalidConfiguration,
    InvalidField,
    InvalidJSON,
    InvalidName,
    MissingField,
    MissingParameter,
    RequirementNotMet,
    TransitionNotAllowed,
    UnknownConfigurationState,
    UnknownEvent,
    UnknownInstance,
)
from stateservice.store import machine_query
from stateservice.store.machines import Event, Machines, Outcome, check_configuration
from stateservice.telemetry import logs, metrics
from stateservice.web import auth
from stateservice.web.appkeys import BODY_LIMIT, MACHINES, REDIS
from stateservice.web.deadline import redis_deadline
from stateservice.web.handlers import who

EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_DETAILS = 4096  # bytes of `details`, JSON-encoded: kept in the history of every instance it moves
MAX_ORIGINATOR = 200
QUERY_DEFAULT, QUERY_MAX = 100, 1000
QUERY_PARAMETERS = frozenset({"configuration", "state", "limit", "cursor"})  # any other names a property
EVENT_FIELDS = frozenset({"event", "event_id", "originator", "details"})
# an outcome's keys in the order answers show them (the script's JSON encoder keeps no order)
OUTCOME_ORDER = ("event_id", "outcome", "instance", "configuration", "event", "from", "to", "at", "state")
NAME_RULE = "letters, digits, '.', '_', '-'; starting with a letter or digit; at most 64"
ID_RULE = "letters, digits, '.', '_', '-'; starting with a letter or digit; at most 128"


def _machines(request: web.Request) -> Machines:
    return request.app[MACHINES]


def _allow(request: web.Request, ref: str) -> None:
    """Raise ForbiddenConfiguration unless the caller's token may touch configuration `ref` (by its name)."""
    name = ref.partition(":")[0]
    if not auth.visible(request, name):
        raise ForbiddenConfiguration(auth.identity(request), auth.scope_of(request).value, name)


async def _allow_instance(request: web.Request, instance: str) -> None:
    """_allow for the configuration of `instance`, read only for a token bound to some configurations."""
    if request.get(auth.CHARTS_ALLOWED) is None:
        return
    found = await _machines(request).state(instance)
    if found is not None:
        _allow(request, found[0])


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object. Raises InvalidJSON (400) or BodyTooLarge (413)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(request.app[BODY_LIMIT]) from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidJSON("the body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidJSON("the body must be a JSON object")
    return body


def _only(body: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(str(k) for k in body if k not in known)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; the fields are {', '.join(sorted(known))}", field=unknown[0])


def _ref_field(body: Mapping[str, Any], example: str) -> str:
    value = body.get("configuration")
    if value is None:
        raise MissingField("configuration", example)
    try:
        parse_ref(value if isinstance(value, str) else repr(value))
    except Invalid as invalid:
        raise InvalidField("configuration", str(invalid)) from None
    assert isinstance(value, str)
    return value


def _id_field(value: Any, name: str) -> str:
    if not isinstance(value, str) or not INSTANCE_ID.fullmatch(value):
        raise InvalidField(name, f"{name} {str(value)[:80]!r} is not an instance id ({ID_RULE})")
    return value


def _properties_field(value: Any) -> dict[str, str]:
    properties, findings = check_properties(value)
    if findings:
        raise InvalidField("properties", "; ".join(str(f) for f in findings))
    return properties


def _path_ref(request: web.Request) -> str:
    name, version = request.match_info["name"], request.match_info["version"]
    for part in (name, version):
        if not NAME.fullmatch(part):
            raise InvalidName(f"{part[:80]!r} is not a configuration name or version ({NAME_RULE})", parameter="ref")
    return f"{name}:{version}"


def _path_id(request: web.Request) -> str:
    instance = request.match_info["id"]
    if not INSTANCE_ID.fullmatch(instance):
        raise InvalidName(f"{instance[:80]!r} is not an instance id ({ID_RULE})", parameter="id")
    return instance


# configurations


async def post_configuration(request: web.Request) -> web.Response:
    """Define a configuration: 201 with it; 409 if its name:version exists; 422 naming every problem."""
    configuration = check_configuration(await json_object(request))
    _allow(request, configuration.ref)
    logs.bind(configuration=configuration.ref)
    async with redis_deadline(request):
        await _check_requirements(_machines(request), configuration)
        await _machines(request).define_new(configuration)
    return web.json_response(
        configuration.document(), status=201, headers={"Location": f"/configurations/{configuration.ref}"}
    )


async def _check_requirements(machines: Machines, configuration: Configuration) -> None:
    """A guard on another instance must name a defined configuration and one of its states. Raises 422."""
    problems = []
    for i, transition in enumerate(configuration.transitions):
        requires = transition.requires
        if requires is None or requires.configuration is None:
            continue
        where = f"transitions.{i}.requires"
        ref = requires.configuration
        other = configuration if ref == configuration.ref else await machines.configuration(ref)
        if other is None:
            problems.append(f"{where}.configuration: no configuration {ref} is defined")
        elif requires.state not in other.states:
            problems.append(f"{where}.state: configuration {ref} has no state {requires.state!r}")
    if problems:
        raise InvalidConfiguration(problems)


async def list_configurations(request: web.Request) -> web.Response:
    """`{"configurations": ["NAME:VERSION", ...]}`, sorted; of `?name=` only when given."""
    name = request.query.get("name")
    if name is not None and not NAME.fullmatch(name):
        raise InvalidName(f"name={name[:80]!r} is not a configuration name ({NAME_RULE})", parameter="name")
    async with redis_deadline(request):
        refs = await _machines(request).refs(name)
    return web.json_response({"configurations": [r for r in refs if auth.visible(request, r.partition(":")[0])]})


async def get_configuration(request: web.Request) -> web.Response:
    ref = _path_ref(request)
    _allow(request, ref)
    async with redis_deadline(request):
        configuration = await _machines(request).require(ref)
    return web.json_response(configuration.document())


async def configuration_counts(request: web.Request) -> web.Response:
    """Instances per state of one configuration: one hash read."""
    ref = _path_ref(request)
    _allow(request, ref)
    async with redis_deadline(request):
        machines = _machines(request)
        counts = await machines.counts(await machines.require(ref))
    return web.json_response({"configuration": ref, "counts": counts})


# instances


async def post_instance(request: web.Request) -> web.Response:
    """Create an instance: 201 (made) or 200 (properties named an existing one), with it and its Location."""
    body = await json_object(request)
    _only(body, frozenset({"configuration", "id", "properties"}))
    ref = _ref_field(body, '{"configuration": "NAME:VERSION"}')
    if "id" in body and "properties" in body:
        raise BadRequest("give id or properties, not both: properties name the instance", field="id")
    instance = _id_field(body["id"], "id") if "id" in body else None
    properties = _properties_field(body["properties"]) if "properties" in body else None
    _allow(request, ref)
    async with redis_deadline(request):
        machines = _machines(request)
        instance, made = await machines.create(ref, instance, properties)
        found = await machines.instance(instance)
    if found is None:
        raise UnknownInstance(instance)  # removed by an operator between the two calls
    logs.bind(configuration=ref, instance=instance)
    return web.json_response(found, status=201 if made else 200, headers={"Location": f"/statemachines/{instance}"})


async def get_instance(request: web.Request) -> web.Response:
    instance = _path_id(request)
    async with redis_deadline(request):
        found = await _machines(request).instance(instance)
    if found is None:
        raise UnknownInstance(instance)
    _allow(request, found["configuration"])
    return web.json_response(found)


async def list_instances(request: web.Request) -> web.Response:
    """A page of a configuration's instances by state and properties: `{"items", "cursor"}` (see machine_query)."""
    raw = request.query.get("configuration")
    if not raw:
        raise MissingParameter("configuration")
    try:
        parse_ref(raw)
    except Invalid as invalid:
        raise InvalidName(str(invalid), parameter="configuration") from None
    state = request.query.get("state")
    if state is not None and not STATE_NAME.fullmatch(state):
        raise InvalidName(f"state={state[:80]!r} is not a state name ({ID_RULE})", parameter="state")
    limit = _limit(request)
    properties = _query_properties(request)
    _allow(request, raw)
    async with redis_deadline(request):
        configuration = await _machines(request).require(raw)
        if state is not None and state not in configuration.states:
            raise UnknownConfigurationState(raw, state, configuration.states)
        page = await machine_query.find(
            request.app[REDIS], configuration, state, properties, limit, request.query.get("cursor")
        )
    return web.json_response({"items": page.items, "cursor": page.cursor})


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return QUERY_DEFAULT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= QUERY_MAX:
        raise BadRequest(f"limit={raw[:20]!r} must be a whole number from 1 to {QUERY_MAX}", parameter="limit")
    return int(raw)


def _query_properties(request: web.Request) -> dict[str, str]:
    names = [k for k in request.query if k not in QUERY_PARAMETERS]
    if not names:
        return {}
    for name in names:
        if len(request.query.getall(name)) > 1:
            raise BadRequest(f"property {name[:64]!r} is given twice: an instance has one value", parameter=name)
    properties, findings = check_properties({k: request.query[k] for k in names}, ())
    if findings:
        raise BadRequest("; ".join(str(f) for f in findings), parameter=names[0])
    return properties


# events


async def post_instance_event(request: web.Request) -> web.Response:
    """Apply an event to the instance of the path, once per event_id: 200, or its refusal (409/404)."""
    instance = _path_id(request)
    body = await json_object(request)
    _only(body, EVENT_FIELDS)
    event = _event(request, body, instance=instance)
    async with redis_deadline(request):
        await _allow_instance(request, instance)
        return await _answer(request, await _machines(request).apply(event))


async def post_event(request: web.Request) -> web.Response:
    """An event addressed in its body: `dest` (an id), or configuration + properties (made on first use)."""
    body = await json_object(request)
    _only(body, EVENT_FIELDS | {"dest", "configuration", "properties"})
    if "dest" in body:
        if "configuration" in body or "properties" in body:
            raise BadRequest("give dest, or configuration and properties, not both", field="dest")
        event = _event(request, body, instance=_id_field(body["dest"], "dest"))
    else:
        ref = _ref_field(body, '{"dest": ID} or {"configuration": "NAME:VERSION", "properties": {...}}')
        properties = _properties_field(body.get("properties"))
        _allow(request, ref)
        event = _event(request, body, ref=ref, properties=properties)
    async with redis_deadline(request):
        if event.ref is None:
            await _allow_instance(request, event.target())
        else:
            await _machines(request).require(event.ref)  # else the event would answer unknown_instance
        return await _answer(request, await _machines(request).apply(event))


def _event(request: web.Request, body: Mapping[str, Any], **target: Any) -> Event:
    if "event" not in body:
        raise MissingField("event", '{"event": NAME}')
    name = body["event"]
    if not isinstance(name, str) or not EVENT.fullmatch(name):
        raise InvalidField("event", f"event {str(name)[:80]!r} is not an event name ({ID_RULE})")
    event_id = body.get("event_id", str(uuid.uuid4()))
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        raise InvalidField("event_id", "event_id must be 1-128 letters, digits, '.', '_', ':', '-'")
    originator = body.get("originator", who(request).actor)
    if not isinstance(originator, str) or not 0 < len(originator) <= MAX_ORIGINATOR or not originator.isprintable():
        raise InvalidField("originator", f"originator must be 1-{MAX_ORIGINATOR} printable characters")
    details = body.get("details")
    if details is not None and len(orjson.dumps(details)) > MAX_DETAILS:
        raise InvalidField("details", f"details must be at most {MAX_DETAILS} bytes as JSON")
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
    if kind == "unknown_instance":
        raise UnknownInstance(str(body.pop("instance")), **body)
    configuration = await _machines(request).require(str(body["configuration"]))
    state, event = str(body["state"]), str(body["event"])
    if kind == "requirement_not_met":
        transition = configuration.moves(event).get(state)
        requires = transition.requires if transition is not None else None
        raise RequirementNotMet(body, requires.document() if requires is not None else {})
    raise TransitionNotAllowed(body, configuration.allowed(state))


async def get_event(request: web.Request) -> web.Response:
    """The stored outcome of an event (kept --event-retention), whatever it was: 200; 404 unknown_event."""
    instance = _path_id(request)
    event_id = request.match_info["event_id"]
    if not EVENT_ID.fullmatch(event_id):
        raise InvalidName(f"{event_id[:80]!r} is not an event id", parameter="event_id")
    async with redis_deadline(request):
        await _allow_instance(request, instance)
        outcome = await _machines(request).outcome(instance, event_id)
    if outcome is None:
        raise UnknownEvent(instance, event_id)
    return web.json_response(ordered(outcome))


def ordered(outcome: Mapping[str, Any]) -> dict[str, Any]:
    """The outcome with its keys in OUTCOME_ORDER, then any others."""
    first = {k: outcome[k] for k in OUTCOME_ORDER if k in outcome}
    return {**first, **{k: v for k, v in outcome.items() if k not in first}}
