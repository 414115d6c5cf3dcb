"""Configurations and instances over HTTP (issue #15): parse, ask the Machines store, answer.

    POST /configurations                           define a configuration (admin scope); 201, 409 if it exists
    GET  /configurations[?name=N]                  NAME:VERSION of every configuration (of N)
    GET  /configurations/{name}:{version}          the configuration as posted
    GET  /configurations/{name}:{version}/counts   instances per state
    POST /statemachines                            an instance, by id or by properties (report scope)
    GET  /statemachines?configuration=C[&state=S][&PROP=VALUE...][&limit=N][&cursor=C]   a page of instances
    GET  /statemachines/{id}                       the instance, with its newest history

Events to instances are `web/machine_events.py`'s, which shares the body and token checks below.

A token with a `charts` list may touch only the configurations whose *names* the list holds (and
their instances); the checks are here rather than in `auth.py` because an instance's configuration
is known only once it is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web

from stateservice.core.chart import STATE_NAME
from stateservice.core.machines import (
    DERIVED,
    INSTANCE_ID,
    NAME,
    RESERVED_PROPERTIES,
    Configuration,
    Invalid,
    check_properties,
    parse_ref,
)
from stateservice.errors import (
    BadRequest,
    BodyTooLarge,
    Forbidden,
    InvalidConfiguration,
    InvalidField,
    InvalidJSON,
    InvalidName,
    MissingField,
    MissingParameter,
    UnknownConfigurationState,
    UnknownInstance,
)
from stateservice.store import machine_query
from stateservice.store.machines import Machines, check_configuration, requirement_problems
from stateservice.telemetry import logs
from stateservice.web import auth
from stateservice.web.appkeys import BODY_LIMIT, MACHINES, REDIS
from stateservice.web.deadline import redis_deadline
from stateservice.web.handlers import who
from stateservice.web.machine_approvals import allow as allow  # the check every instance route makes
from stateservice.web.machine_approvals import pending_approval

log = structlog.get_logger(__name__)

QUERY_DEFAULT, QUERY_MAX = 100, 1000
QUERY_PARAMETERS = RESERVED_PROPERTIES  # any other names a property
NAME_RULE = "letters, digits, '.', '_', '-'; starting with a letter or digit; at most 64"
ID_RULE = "letters, digits, '.', '_', '-'; starting with a letter or digit; at most 128"


def machines_of(request: web.Request) -> Machines:
    return request.app[MACHINES]


async def allow_instance(request: web.Request, instance: str) -> None:
    """allow() for the configuration of `instance`, read only for a token bound to some configurations.

    For such a token an instance that does not exist is a 404 before anything is applied or read: else an
    event to it would store an outcome under an id another configuration's instance may take later (and
    answer it to that instance's events), and a stored outcome of any instance would be readable.
    """
    if request.get(auth.CHARTS_ALLOWED) is None:
        return
    found = await machines_of(request).state(instance)
    if found is None:
        raise UnknownInstance(instance)
    allow(request, found[0])


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


def only_fields(body: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(str(k) for k in body if k not in known)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; the fields are {', '.join(sorted(known))}", field=unknown[0])


def ref_field(body: Mapping[str, Any], example: str) -> str:
    value = body.get("configuration")
    if value is None:
        raise MissingField("configuration", example)
    try:
        parse_ref(value if isinstance(value, str) else repr(value))
    except Invalid as invalid:
        raise InvalidField("configuration", str(invalid)) from None
    assert isinstance(value, str)
    return value


def id_field(value: Any, name: str) -> str:
    if not isinstance(value, str) or not INSTANCE_ID.fullmatch(value):
        raise InvalidField(name, f"{name} {str(value)[:80]!r} is not an instance id ({ID_RULE})")
    return value


def properties_field(value: Any) -> dict[str, str]:
    """Properties that name an instance. A query parameter's name (QUERY_PARAMETERS) is no property: a query
    could not ask for it."""
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


def path_id(request: web.Request) -> str:
    instance = request.match_info["id"]
    if not INSTANCE_ID.fullmatch(instance):
        raise InvalidName(f"{instance[:80]!r} is not an instance id ({ID_RULE})", parameter="id")
    return instance


# configurations


async def post_configuration(request: web.Request) -> web.Response:
    """Define a configuration: 201 with it; 409 if its name:version exists; 422 naming every problem."""
    configuration = check_configuration(await json_object(request))
    allow(request, configuration.ref)
    logs.bind(configuration=configuration.ref)
    async with redis_deadline(request):
        await _check_requirements(request, configuration)
        await machines_of(request).define_new(configuration)
    return web.json_response(
        configuration.document(), status=201, headers={"Location": f"/configurations/{configuration.ref}"}
    )


async def _check_requirements(request: web.Request, configuration: Configuration) -> None:
    """A guard on another instance must name a defined configuration and one of its states. Raises 422.

    A guard names only configurations and charts the caller's token may touch (ForbiddenConfiguration,
    Forbidden), checked before anything is read: else a bound token could define configurations guarded on
    others', and learn from the 422s and the guards' answers whether they exist and what state they are in.
    """
    for transition in configuration.transitions:
        requires = transition.requires
        if requires is not None and requires.configuration is not None:
            allow(request, requires.configuration)
        elif requires is not None and requires.chart is not None and not auth.visible(request, requires.chart):
            raise Forbidden(auth.identity(request), auth.scope_of(request).value, requires.chart)
    problems = await requirement_problems(machines_of(request), configuration)
    if problems:
        raise InvalidConfiguration(problems)


async def list_configurations(request: web.Request) -> web.Response:
    """`{"configurations": ["NAME:VERSION", ...]}`, sorted; of `?name=` only when given."""
    name = request.query.get("name")
    if name is not None and not NAME.fullmatch(name):
        raise InvalidName(f"name={name[:80]!r} is not a configuration name ({NAME_RULE})", parameter="name")
    async with redis_deadline(request):
        refs = await machines_of(request).refs(name)
    return web.json_response({"configurations": [r for r in refs if auth.visible(request, r.partition(":")[0])]})


async def get_configuration(request: web.Request) -> web.Response:
    ref = _path_ref(request)
    allow(request, ref)
    async with redis_deadline(request):
        configuration = await machines_of(request).require(ref)
    return web.json_response(configuration.document())


async def configuration_counts(request: web.Request) -> web.Response:
    """Instances per state of one configuration: one hash read."""
    ref = _path_ref(request)
    allow(request, ref)
    async with redis_deadline(request):
        machines = machines_of(request)
        counts = await machines.counts(await machines.require(ref))
    return web.json_response({"configuration": ref, "counts": counts})


# instances


async def post_instance(request: web.Request) -> web.Response:
    """Create an instance: 201 (made) or 200 (properties named an existing one), with it and its Location."""
    body = await json_object(request)
    only_fields(body, frozenset({"configuration", "id", "properties"}))
    ref = ref_field(body, '{"configuration": "NAME:VERSION"}')
    if "id" in body and "properties" in body:
        raise BadRequest("give id or properties, not both: properties name the instance", field="id")
    instance = id_field(body["id"], "id") if "id" in body else None
    if instance is not None and instance.startswith(DERIVED):
        raise InvalidField("id", f"id {instance!r} starts with {DERIVED!r}: those name instances by their properties")
    properties = properties_field(body["properties"]) if "properties" in body else None
    allow(request, ref)
    async with redis_deadline(request):
        machines = machines_of(request)
        instance, made = await machines.create(ref, instance, properties)
        found = await machines.instance(instance)
        if found is None:
            raise UnknownInstance(instance)  # removed by an operator between the two calls
        found["pending_approval"] = await pending_approval(request, instance)
    logs.bind(configuration=ref, instance=instance)
    return web.json_response(found, status=201 if made else 200, headers={"Location": f"/statemachines/{instance}"})


async def get_instance(request: web.Request) -> web.Response:
    instance = path_id(request)
    async with redis_deadline(request):
        found = await machines_of(request).instance(instance)
        if found is None:
            raise UnknownInstance(instance)
        allow(request, found["configuration"])
        found["pending_approval"] = await pending_approval(request, instance)
    return web.json_response(found)


async def delete_instance(request: web.Request) -> web.Response:
    """Remove an instance (admin scope) with its indexes, count, properties, context and history:
    `{"id", "configuration", "state"}` as it was; 404 when there is none."""
    instance = path_id(request)
    async with redis_deadline(request):
        await allow_instance(request, instance)
        removed = await machines_of(request).delete(instance)
    if removed is None:
        raise UnknownInstance(instance)
    log.info("instance_deleted", id=instance, configuration=removed[0], state=removed[1], actor=who(request).actor)
    return web.json_response({"id": instance, "configuration": removed[0], "state": removed[1]})


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
    allow(request, raw)
    async with redis_deadline(request):
        configuration = await machines_of(request).require(raw)
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
