"""The OpenAPI 3.0 contract of the HTTP API, served at `GET /openapi.json`, built from the route table.

Each route in `web/routes.py` carries an `Operation`: its summary, parameters, the 200 it
answers, and the `Refusal`s it may answer instead, each naming the error classes of
`errors.py` it stands for; the status (and the error schema) come from those classes, and
every route that `web/auth.py` does not leave open may also answer `Unauthorized` and
`Forbidden`. Adding a route or an error to a route updates the document.
`tests/integration/test_openapi.py` checks that every route is described and fuzzes the
running service against this document (schemathesis): no 5xx, no answer outside it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stateservice import __version__
from stateservice.core.chart import CHART_NAME, HOST_NAME, STATE_NAME
from stateservice.errors import (
    Forbidden,
    HeadersTooLarge,
    NotCurrent,
    QueryTooLong,
    StateServiceError,
    Unauthorized,
)
from stateservice.web.auth import OPEN_PATHS
from stateservice.web.limits import MAX_HEADERS, MAX_QUERY


def _pattern(rx: Any) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{rx.pattern}$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_answer(schema: dict[str, Any] | str, description: str) -> dict[str, Any]:
    """A JSON response: `schema` is a schema, or the name of one in `SCHEMAS`."""
    body = _ref(schema) if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": body}}}


def text_answer(description: str, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A plain-text response (the state name on `/state`), with the `headers` it documents."""
    response: dict[str, Any] = {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}
    if headers:
        response["headers"] = dict(headers)
    return response


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


RETRY_AFTER = {"Retry-After": _header("seconds to wait before asking again")}
ERROR_SCHEMAS: dict[type[StateServiceError], str] = {NotCurrent: "NotCurrent"}  # errors with more than `Error`


@dataclass(frozen=True)
class Refusal:
    """An answer an operation may give instead of its 200: the errors it stands for (all of one status)."""

    errors: tuple[type[StateServiceError], ...]
    description: str
    retry_after: bool = False  # documents Retry-After on a status other than 503 (which always has it)

    def __post_init__(self) -> None:
        if len({error.status for error in self.errors}) != 1:
            raise ValueError(f"a refusal stands for errors of one status: {self.errors}")

    @property
    def status(self) -> int:
        return self.errors[0].status

    def response(self) -> dict[str, Any]:
        schema = next((ERROR_SCHEMAS[e] for e in self.errors if e in ERROR_SCHEMAS), "Error")
        response = json_answer(schema, self.description)
        headers = {**(RETRY_AFTER if self.retry_after or self.status == 503 else {}), **_headers_of(self.errors)}
        if headers:
            response["headers"] = headers
        return response


def _headers_of(errors: Iterable[type[StateServiceError]]) -> dict[str, Any]:
    """The headers these errors always answer with (e.g. `Unauthorized`'s WWW-Authenticate), documented by value."""
    return {name: _header(value) for error in errors for name, value in error.always_headers.items()}


Parameter = dict[str, Any] | Callable[[float], dict[str, Any]]  # a callable is given this service's --max-wait


@dataclass(frozen=True)
class Operation:
    """What the document says of one route."""

    summary: str
    ok: dict[str, Any]  # the 200 response
    parameters: Sequence[Parameter] = ()
    refusals: Sequence[Refusal] = ()
    body: dict[str, Any] | None = None  # the request body's JSON schema
    status: int = 200  # the status of `ok` (201 for a creation)
    also: Mapping[int, dict[str, Any]] = field(default_factory=dict)  # other successful answers, by status

    def document(self, max_wait: float, protected: bool, auth: bool) -> dict[str, Any]:
        operation: dict[str, Any] = {"summary": self.summary}
        if self.parameters:
            operation["parameters"] = [p(max_wait) if callable(p) else p for p in self.parameters]
        if self.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": self.body}}}
        # every request may be refused for its size before routing; an operation's own words win
        refusals = [*ANY_REQUEST, *self.refusals, *(PROTECTED if protected else ())]
        successes = {str(self.status): self.ok, **{str(status): answer for status, answer in self.also.items()}}
        operation["responses"] = {**successes, **{str(r.status): r.response() for r in refusals}}
        if protected and auth:
            operation["security"] = [{"bearer": []}]
        return operation


ANY_REQUEST = (
    Refusal((QueryTooLong,), f"the query string is over the service's limit ({MAX_QUERY} bytes)"),
    Refusal((HeadersTooLarge,), f"the headers together are over the service's limit ({MAX_HEADERS} bytes)"),
)

PROTECTED = (
    Refusal((Unauthorized,), "no token, or an unknown one"),
    Refusal((Forbidden,), "the token lacks the scope, or the chart, this needs"),
)

Q_STATE = {
    "name": "state",
    "in": "query",
    "required": True,
    "description": "the state asked about (a missing one is a 400)",
    "schema": _pattern(STATE_NAME),
}
Q_CHART = {
    "name": "chart",
    "in": "query",
    "required": False,
    "description": "the chart: required when the service serves several (else 400 chart_required)",
    "schema": _pattern(CHART_NAME),
}
Q_HOST = {
    "name": "host",
    "in": "query",
    "required": False,
    "description": "the reporting host: a host counts once per visit of a state",
    "schema": _pattern(HOST_NAME),
}
P_CHART = {"name": "chart", "in": "path", "required": True, "schema": _pattern(CHART_NAME)}
P_HOST = {"name": "host", "in": "path", "required": True, "schema": _pattern(HOST_NAME)}
Q_STATE_OPTIONAL = {**Q_STATE, "required": False, "description": "the state (default: the current one)"}
Q_REASON = {
    "name": "reason",
    "in": "query",
    "required": False,
    "description": "why, for the history (at most 200 characters)",
    "schema": {"type": "string", "maxLength": 200},
}
Q_RESULT = {
    "name": "result",
    "in": "query",
    "required": False,
    "description": "success (default: counted) or failure (recorded, not counted; needs host; may halt the chart)",
    "schema": {"type": "string", "enum": ["success", "failure"]},
}


def q_wait(max_wait: float) -> dict[str, Any]:
    return {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": "long-poll: seconds to wait for the state to become current (more than --max-wait is a 400)",
        "schema": {"type": "number", "minimum": 0, "maximum": max_wait},
    }


class Documented(Protocol):
    """A route as the document needs it (`web/routes.py`'s `Route`)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def doc(self) -> Operation: ...


def openapi_path(path: str) -> str:
    """An aiohttp path as OpenAPI writes it: `{chart:[^/]+}` becomes `{chart}`."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def document(routes: Iterable[Documented], max_wait: float = 300.0, auth: bool = False) -> dict[str, Any]:
    """The whole OpenAPI document of `routes` (`max_wait`: this service's --max-wait; `auth`: tokens are required)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = openapi_path(route.path)
        protected = path not in OPEN_PATHS
        paths.setdefault(path, {})[route.method.lower()] = route.doc.document(max_wait, protected, auth)
    whole = {
        "openapi": "3.0.3",
        "info": {
            "title": "stateservice",
            "version": __version__,
            "description": "State machines as a service for fleets: HTTP gates kept in Redis. "
            "Every error body is {error, message, status}.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": BEARER}},
    }
    return copy.deepcopy(whole)  # the parts every document shares stay as they are, whatever a caller does


BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "a token from the --tokens file (`stateservice token create`); with --tls-client-ca a "
    "client certificate whose CN names a token also works",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message", "status"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "status": {"type": "integer"},
        },
        "additionalProperties": True,
    },
    "NotCurrent": {
        "allOf": [
            _ref("Error"),
            {
                "type": "object",
                "required": ["current_state"],
                "properties": {"current_state": {"type": "string"}, "chart": {"type": "string"}},
            },
        ]
    },
    "ChartList": {
        "type": "object",
        "required": ["charts"],
        "properties": {
            "charts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "current_state"],
                    "properties": {"name": {"type": "string"}, "current_state": {"type": "string"}},
                },
            },
            "cursor": {
                "type": "string",
                "nullable": True,
                "description": "with `limit`: the next page's cursor, null on the last page",
            },
        },
    },
    "Chart": {
        "type": "object",
        "required": ["name", "current_state", "final", "entered_at", "due_at", "hosts_counted", "states"],
        "properties": {
            "name": {"type": "string"},
            "current_state": {"type": "string"},
            "final": {"type": "boolean"},
            "entered_at": {"type": "string"},
            "due_at": {"type": "string", "nullable": True},
            "halted": {"type": "boolean"},
            "halted_reason": {"type": "string", "nullable": True},
            "halted_at": {"type": "string", "nullable": True},
            "hosts_counted": {"type": "array", "items": {"type": "string"}},
            "failures": {
                "type": "array",
                "description": "hosts that reported result=failure in this visit of the current state",
                "items": {"type": "object", "properties": {"host": {}, "at": {}, "reason": {}}},
            },
            "expired": {
                "type": "array",
                "description": "hosts whose slot expired unrenewed in this visit",
                "items": {"type": "object", "properties": {"host": {}, "at": {}}},
            },
            "slots_held": {"type": "array", "items": {"type": "string"}},
            "digest": {"type": "string"},
            "states": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "func", "counter", "target"],
                    "properties": {
                        "name": {"type": "string"},
                        "func": {"type": "string", "nullable": True, "enum": ["increment", "time", None]},
                        "final": {"type": "boolean"},
                        "counter": {
                            "type": "object",
                            "nullable": True,
                            "properties": {"key": {"type": "string"}, "value": {"type": "integer"}},
                        },
                        "target": {
                            "type": "object",
                            "nullable": True,
                            "properties": {"name": {"type": "string"}, "when": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
    "History": {
        "type": "object",
        "required": ["chart", "history"],
        "properties": {
            "chart": {"type": "string"},
            "history": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["at", "from", "to", "cause", "host"],
                    "properties": {
                        "id": {"type": "string"},
                        "at": {"type": "string"},
                        "from": {"type": "string", "nullable": True},
                        "to": {"type": "string"},
                        "cause": {"type": "string", "enum": ["put", "time", "reset"]},
                        "host": {"type": "string", "nullable": True},
                        "due_at": {"type": "string", "nullable": True},
                        "actor": {
                            "type": "string",
                            "nullable": True,
                            "description": "who: token name, client-certificate CN, '-' without auth, 'time'",
                        },
                        "remote": {"type": "string", "nullable": True, "description": "the caller's address"},
                    },
                },
            },
        },
    },
    "Slot": {
        "type": "object",
        "required": ["chart", "state", "host", "granted_at", "expires_at"],
        "properties": {
            "chart": {"type": "string"},
            "state": {"type": "string"},
            "host": {"type": "string"},
            "granted_at": {"type": "string"},
            "expires_at": {"type": "string", "description": "renew (ask again) before this, or the slot is freed"},
            "renewed": {"type": "boolean"},
            "held": {"type": "integer", "description": "slots held after this request"},
            "limit": {"type": "integer", "description": "the state's concurrency"},
        },
    },
    "Slots": {
        "type": "object",
        "required": ["chart", "state", "limit", "held", "slots"],
        "properties": {
            "chart": {"type": "string"},
            "state": {"type": "string"},
            "limit": {"type": "integer"},
            "held": {"type": "integer"},
            "slots": {"type": "array", "items": _ref("Slot")},
        },
    },
    "Released": {
        "type": "object",
        "required": ["chart", "state", "host", "released"],
        "properties": {
            "chart": {"type": "string"},
            "state": {"type": "string"},
            "host": {"type": "string"},
            "released": {"type": "boolean", "description": "false: the host held no slot"},
        },
    },
    "Forgotten": {
        "type": "object",
        "required": ["chart", "state", "host", "report", "failure"],
        "properties": {
            "chart": {"type": "string"},
            "state": {"type": "string"},
            "host": {"type": "string"},
            "report": {"type": "boolean", "description": "a counted report was forgotten (the counter went down)"},
            "failure": {"type": "boolean", "description": "a failure was forgotten"},
        },
    },
    "Halt": {
        "type": "object",
        "required": ["chart", "halted"],
        "properties": {
            "chart": {"type": "string"},
            "state": {"type": "string"},
            "halted": {"type": "boolean"},
            "reason": {"type": "string"},
            "resumed": {"type": "boolean", "description": "resume: false when the chart was not halted"},
        },
    },
    "Reset": {
        "type": "object",
        "required": ["chart", "from", "to", "at"],
        "properties": {
            "chart": {"type": "string"},
            "from": {"type": "string", "nullable": True},
            "to": {"type": "string"},
            "at": {"type": "string"},
        },
    },
    "Leader": {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "string", "nullable": True},
            "pid": {"type": "integer", "nullable": True},
            "expires_at": {"type": "string", "nullable": True},
        },
    },
    "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "Prediction": {
        "type": "object",
        "required": ["state"],
        "properties": {"state": {"type": "array", "items": {"type": "string"}}},
    },
    "Models": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": {"type": "object"}}},
    },
}
