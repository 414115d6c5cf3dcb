"""What the OpenAPI document says of the configurations' and instances' routes (`web/machines.py`).

Kept apart from `routes.py`, which lists the routes, so that each module stays one size. The
schemas are inline: they are the machines' alone. Request bodies are described no stricter than
the handlers check them (the fuzzing expects every body the schema calls wrong to be refused).
"""

from __future__ import annotations

from typing import Any

from stateservice.core.chart import STATE_NAME
from stateservice.core.machines import (
    EVENT,
    EVENT_ID,
    INSTANCE_ID,
    MAX_ORIGINATOR,
    MAX_PROPERTIES,
    MAX_PROPERTY_VALUE,
    MAX_STATES,
    NAME,
)
from stateservice.errors import (
    BadRequest,
    BodyTooLarge,
    ConfigurationExists,
    EventRefused,
    InstanceExists,
    InvalidConfiguration,
    RequirementNotMet,
    StoreBusy,
    StoreUnavailable,
    TransitionNotAllowed,
    UnknownConfiguration,
    UnknownConfigurationState,
    UnknownEvent,
    UnknownInstance,
)
from stateservice.store.machine_query import CURSOR
from stateservice.web.machines import QUERY_MAX
from stateservice.web.openapi import Operation, Refusal, json_answer


def _pattern(rx: Any) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{rx.pattern}$"}


REF = {"type": "string", "pattern": f"^{NAME.pattern}:{NAME.pattern}$", "description": "NAME:VERSION"}
P_NAME = {"name": "name", "in": "path", "required": True, "schema": _pattern(NAME)}
P_VERSION = {"name": "version", "in": "path", "required": True, "schema": _pattern(NAME)}
P_ID = {"name": "id", "in": "path", "required": True, "schema": _pattern(INSTANCE_ID)}
P_EVENT_ID = {"name": "event_id", "in": "path", "required": True, "schema": _pattern(EVENT_ID)}
Q_NAME = {
    "name": "name",
    "in": "query",
    "required": False,
    "description": "only this name's versions",
    "schema": _pattern(NAME),
}
Q_CONFIGURATION = {"name": "configuration", "in": "query", "required": True, "schema": REF}
Q_STATE = {
    "name": "state",
    "in": "query",
    "required": False,
    "description": "only instances in this state",
    "schema": _pattern(STATE_NAME),
}
Q_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "at most this many instances a page (default 100); any other query parameter is a property",
    "schema": {"type": "integer", "minimum": 1, "maximum": QUERY_MAX},
}
Q_CURSOR = {
    "name": "cursor",
    "in": "query",
    "required": False,
    "description": "the page before's `cursor` (opaque)",
    "schema": _pattern(CURSOR),
}

PROPERTIES = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": MAX_PROPERTIES,
    "additionalProperties": {"type": "string", "minLength": 1, "maxLength": MAX_PROPERTY_VALUE},
    "description": "property names are letters, digits, '.', '_', '-'; equal sets name one instance, in any order",
}
APPROVAL_STATE = {
    "type": "object",
    "description": "an approval state (docs/instances.md#approval-states): waits for POST /continuations/{id}",
    "required": ["name", "type"],
    "additionalProperties": False,
    "properties": {
        "name": _pattern(STATE_NAME),
        "type": {"enum": ["approval"]},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["when", "next"],
                "additionalProperties": False,
                "properties": {"when": {"type": "object"}, "next": _pattern(STATE_NAME)},
            },
        },
        "default": _pattern(STATE_NAME),
        "timeout": {
            "type": "object",
            "required": ["after", "next"],
            "additionalProperties": False,
            "properties": {"after": {"type": "string"}, "next": _pattern(STATE_NAME)},
        },
        "notify": {"type": "string", "format": "uri"},
    },
}
CONFIGURATION = {
    "type": "object",
    "required": ["name", "version", "states", "starting_state"],
    "additionalProperties": False,
    "properties": {
        "name": _pattern(NAME),
        "version": _pattern(NAME),
        "states": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_STATES,
            "uniqueItems": True,
            "items": {"oneOf": [_pattern(STATE_NAME), APPROVAL_STATE]},
        },
        "starting_state": _pattern(STATE_NAME),
        "transitions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["from", "to", "event"],
                "additionalProperties": False,
                "properties": {
                    "from": _pattern(STATE_NAME),
                    "to": _pattern(STATE_NAME),
                    "event": _pattern(EVENT),
                    "requires": {
                        "type": "object",
                        "description": "{chart, state} or {configuration, properties, state}: a guard",
                    },
                },
            },
        },
    },
}
HISTORY = {
    "type": "object",
    "properties": {
        k: {} for k in ("event_id", "event", "from", "to", "at", "originator", "details", "cause", "continuation")
    },
}
INSTANCE = {
    "type": "object",
    "required": ["id", "configuration", "state", "properties", "context", "history"],
    "properties": {
        "id": {"type": "string"},
        "configuration": {"type": "string"},
        "state": {"type": "string"},
        "properties": {"type": "object", "additionalProperties": {"type": "string"}},
        "context": {"type": "object"},
        "history": {"type": "array", "items": HISTORY, "description": "newest first, bounded by --history-limit"},
        "pending_approval": {
            "type": ["object", "null"],
            "description": "the continuation the instance waits for in an approval state",
        },
    },
}
DELETED = {
    "type": "object",
    "required": ["id", "configuration", "state"],
    "properties": {"id": {"type": "string"}, "configuration": {"type": "string"}, "state": {"type": "string"}},
}
OUTCOME = {
    "type": "object",
    "required": ["event_id", "outcome", "instance", "event"],
    "properties": {
        "event_id": {"type": "string"},
        "outcome": {
            "type": "string",
            "enum": ["ok", "transition_not_allowed", "requirement_not_met", "unknown_instance"],
        },
        "instance": {"type": "string"},
        "event": {"type": "string"},
        "configuration": {"type": "string"},
        "from": {"type": "string"},
        "to": {"type": "string"},
        "at": {"type": "string"},
        "state": {"type": "string", "description": "a refusal: the state the instance was in"},
        "duplicate": {"type": "boolean", "description": "true: this event_id was applied before; nothing changed"},
    },
}
EVENT_FIELDS: dict[str, Any] = {
    "event": _pattern(EVENT),
    "event_id": {**_pattern(EVENT_ID), "description": "sent again, it answers the first outcome (default: a UUID)"},
    "originator": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ORIGINATOR,
        "description": "who sent it (default: the caller's token name)",
    },
    "details": {"description": "any JSON, at most 4 KiB encoded: kept in the instance's history"},
}
LOCATION = {"Location": {"description": "the new resource's path", "schema": {"type": "string"}}}

BAD = Refusal((BadRequest,), "the body or a parameter is malformed (the message says which)")
TOO_LARGE = Refusal((BodyTooLarge,), "the body is over --max-body")
UNAVAILABLE = Refusal((StoreUnavailable, StoreBusy), "Redis is unreachable or the worker is stopping")
NO_CONFIGURATION = Refusal((UnknownConfiguration,), "no such configuration")
NO_INSTANCE = Refusal((UnknownInstance,), "no such instance")
EVENT_REFUSED = (
    BAD,
    TOO_LARGE,
    Refusal(
        (TransitionNotAllowed, RequirementNotMet, EventRefused),
        "the event is not allowed in the instance's state (`allowed` lists those that are), or its guard is not met "
        "(`requires` says what); a duplicate answers the same, with duplicate: true (event_refused: a kept refusal "
        "of another kind, answered as kept)",
    ),
    UNAVAILABLE,
)

POST_CONFIGURATION = Operation(
    "Define a configuration (admin scope): immutable once stored",
    {**json_answer(CONFIGURATION, "stored; Location names it"), "headers": LOCATION},
    [],
    [
        Refusal((BadRequest,), "the body is not a JSON object"),
        TOO_LARGE,
        Refusal((ConfigurationExists,), "this name:version exists: give a new version"),
        Refusal((InvalidConfiguration,), "the configuration cannot be used: `problems` lists every problem"),
        UNAVAILABLE,
    ],
    body=CONFIGURATION,
    status=201,
)
LIST_CONFIGURATIONS = Operation(
    "Every configuration's NAME:VERSION (of one name with `name`), sorted",
    json_answer(
        {
            "type": "object",
            "required": ["configurations"],
            "properties": {"configurations": {"type": "array", "items": {"type": "string"}}},
        },
        "the configurations",
    ),
    [Q_NAME],
    [BAD, UNAVAILABLE],
)
GET_CONFIGURATION = Operation(
    "A configuration, as it was posted",
    json_answer(CONFIGURATION, "the configuration"),
    [P_NAME, P_VERSION],
    [BAD, NO_CONFIGURATION, UNAVAILABLE],
)
COUNTS = Operation(
    "How many instances of the configuration are in each state (exact; one read, O(states))",
    json_answer(
        {
            "type": "object",
            "required": ["configuration", "counts"],
            "properties": {
                "configuration": {"type": "string"},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "the counts, by state",
    ),
    [P_NAME, P_VERSION],
    [BAD, NO_CONFIGURATION, UNAVAILABLE],
)
POST_INSTANCE = Operation(
    "Create an instance at the starting state (report scope): by `id` (default: a UUID) or by `properties`",
    {**json_answer(INSTANCE, "created; Location names it"), "headers": LOCATION},
    [],
    [
        BAD,
        TOO_LARGE,
        NO_CONFIGURATION,
        Refusal((InstanceExists,), "an instance has this id"),
        UNAVAILABLE,
    ],
    body={
        "type": "object",
        "required": ["configuration"],
        "additionalProperties": False,
        "properties": {"configuration": REF, "id": _pattern(INSTANCE_ID), "properties": PROPERTIES},
    },
    status=201,
    also={
        200: {**json_answer(INSTANCE, "the properties named an existing instance: it, unchanged"), "headers": LOCATION}
    },
)
LIST_INSTANCES = Operation(
    "A page of a configuration's instances, by state and by properties (any other parameter: PROP=VALUE)",
    json_answer(
        {
            "type": "object",
            "required": ["items", "cursor"],
            "properties": {
                "items": {"type": "array", "items": {"type": "object", "required": ["id", "state", "properties"]}},
                "cursor": {
                    "type": "string",
                    "nullable": True,
                    "description": "the next page's cursor; null after the last page",
                },
            },
        },
        "the page (it may hold fewer than `limit` before the last)",
    ),
    [Q_CONFIGURATION, Q_STATE, Q_LIMIT, Q_CURSOR],
    [
        BAD,
        Refusal((UnknownConfiguration, UnknownConfigurationState), "no such configuration, or state in it"),
        UNAVAILABLE,
    ],
)
GET_INSTANCE = Operation(
    "An instance: its configuration, state, properties, context and newest history",
    json_answer(INSTANCE, "the instance"),
    [P_ID],
    [BAD, NO_INSTANCE, UNAVAILABLE],
)
DELETE_INSTANCE = Operation(
    "Remove an instance (admin scope) with its indexes, count, properties, context and history; its kept "
    "event outcomes expire with --event-retention",
    json_answer(DELETED, "removed: the id, configuration and state it had"),
    [P_ID],
    [BAD, NO_INSTANCE, UNAVAILABLE],
)
POST_INSTANCE_EVENT = Operation(
    "Send the instance an event (report scope): applied at most once per event_id, atomically",
    json_answer(OUTCOME, "applied: from, to, at (or, with duplicate: true, applied before)"),
    [P_ID],
    [
        *EVENT_REFUSED,
        Refusal(
            (UnknownInstance, UnknownConfiguration),
            "no such instance (or, sent again, the event_id's kept answer: its configuration was not defined)",
        ),
    ],
    body={"type": "object", "required": ["event"], "additionalProperties": False, "properties": EVENT_FIELDS},
)
POST_EVENT = Operation(
    "Send an event (report scope) to `dest` (an id), or to the instance `configuration` and `properties` name "
    "(created at the starting state on first use)",
    json_answer(OUTCOME, "applied: from, to, at (or, with duplicate: true, applied before)"),
    [],
    [*EVENT_REFUSED, Refusal((UnknownInstance, UnknownConfiguration), "no such instance, or configuration")],
    body={
        "type": "object",
        "required": ["event"],
        "additionalProperties": False,
        "properties": {**EVENT_FIELDS, "dest": _pattern(INSTANCE_ID), "configuration": REF, "properties": PROPERTIES},
    },
)
GET_EVENT = Operation(
    "The stored outcome of an event sent to the instance (kept --event-retention), whatever it was",
    json_answer(OUTCOME, "the outcome"),
    [P_ID, P_EVENT_ID],
    [
        BAD,
        Refusal(
            (UnknownEvent, UnknownInstance),
            "no outcome is kept for this event id; or, to a token with a charts list, no such instance",
        ),
        UNAVAILABLE,
    ],
)
