"""The OpenAPI 3.0 contract of the HTTP API, served at `GET /openapi.json`.

Written by hand next to the route table, because the answers (plain text on `/state`, one
error shape everywhere) are the contract. `tests/integration/test_openapi.py` checks that
every route is described and fuzzes the running service against this document (schemathesis):
no 5xx, no answer outside it.
"""

from __future__ import annotations

from typing import Any

from stateservice import __version__
from stateservice.core.chart import CHART_NAME, HOST_NAME, STATE_NAME


def _pattern(rx: Any) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{rx.pattern}$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, schema: str = "Error", headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response = _json(_ref(schema), description)
    if headers:
        response["headers"] = headers
    return response


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before asking again", "schema": {"type": "string"}}}
UNAVAILABLE = _error("Redis is unreachable, the chart needs a reset, or the worker is stopping", headers=RETRY_AFTER)
BAD = _error("a parameter is missing or malformed (the message says which)")
UNKNOWN_CHART = _error("no such chart is served, or (on /state) no such state in the chart")
CHART_ERRORS = {"400": BAD, "404": UNKNOWN_CHART, "500": _error("the stored state is corrupt"), "503": UNAVAILABLE}

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


def _wait(max_wait: float) -> dict[str, Any]:
    return {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": "long-poll: seconds to wait for the state to become current (more than --max-wait is a 400)",
        "schema": {"type": "number", "minimum": 0, "maximum": max_wait},
    }


def _gate(chart_in_path: bool, max_wait: float) -> dict[str, Any]:
    where = [P_CHART] if chart_in_path else [Q_CHART]
    counted = {
        "Stateservice-Counted": {
            "description": "true: counted now; false: already counted",
            "schema": {"type": "string"},
        },
        "Stateservice-State": {
            "description": "the chart's current state after the report",
            "schema": {"type": "string"},
        },
    }
    return {
        "get": {
            "summary": "Is STATE the chart's current state? 200 yes, 406 not (yet)",
            "parameters": [Q_STATE, *where, _wait(max_wait)],
            "responses": {
                "200": _text("the state is current; the body is its name"),
                "406": _error("the state is not current", "NotCurrent", RETRY_AFTER),
                **CHART_ERRORS,
            },
        },
        "put": {
            "summary": "Report STATE done: count it, and move the chart on when enough have reported",
            "parameters": [Q_STATE, *where, Q_HOST],
            "responses": {
                "200": {**_text("counted (or already counted for this host)"), "headers": counted},
                "406": _error("the state is not current", "NotCurrent"),
                "409": _error("the state is final or moves by the clock"),
                **CHART_ERRORS,
            },
        },
    }


def document(max_wait: float = 300.0, auth: bool = False) -> dict[str, Any]:
    """The whole OpenAPI document (`max_wait`: this service's --max-wait; `auth`: tokens are required)."""
    schemas: dict[str, Any] = {
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
                }
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
                "hosts_counted": {"type": "array", "items": {"type": "string"}},
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
    paths: dict[str, Any] = {
        "/state": {
            **_gate(chart_in_path=False, max_wait=max_wait),
            "post": {
                "summary": "Which state is this machine in? A hosted model predicts one state per row",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["name", "values"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "values": {
                                        "type": "array",
                                        "items": {"type": "array", "items": {"type": "number"}},
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "one state per row (JSON, or text lines when text/plain is preferred)",
                        "content": {
                            "application/json": {"schema": _ref("Prediction")},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    "400": _error("the body is not JSON, or not {name, values} with rows of numbers"),
                    "404": _error("no model of that name (or no models served)"),
                    "413": _error("the body is over --max-body"),
                    "422": _error("the model cannot predict from these rows (e.g. wrong width)"),
                    "500": _error("the model failed or predicted something that is none of its states"),
                },
            },
        },
        "/charts": {
            "get": {
                "summary": "Every served chart and its current state",
                "responses": {"200": _json(_ref("ChartList"), "the charts"), "503": UNAVAILABLE},
            }
        },
        "/charts/{chart}": {
            "get": {
                "summary": "A chart: current state, when entered, when due, counters, hosts counted",
                "parameters": [P_CHART],
                "responses": {"200": _json(_ref("Chart"), "the chart"), **CHART_ERRORS},
            }
        },
        "/charts/{chart}/state": _gate(chart_in_path=True, max_wait=max_wait),
        "/charts/{chart}/history": {
            "get": {
                "summary": "The chart's transitions and resets, newest first",
                "parameters": [
                    P_CHART,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "how many records (default 100)",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {"200": _json(_ref("History"), "the records"), **CHART_ERRORS},
            }
        },
        "/charts/{chart}/reset": {
            "post": {
                "summary": "Put the chart back to its initial state (admin scope); recorded in its history",
                "parameters": [P_CHART, Q_HOST],
                "responses": {"200": _json(_ref("Reset"), "the chart was reset"), **CHART_ERRORS},
            }
        },
        "/models": {
            "get": {
                "summary": "The served models: states, file digest, load time",
                "responses": {"200": _json(_ref("Models"), "the models")},
            }
        },
        "/leader": {
            "get": {
                "summary": "Which worker advances time states now",
                "responses": {"200": _json(_ref("Leader"), "the leader, or id null"), "503": UNAVAILABLE},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics, every worker's added up (read scope)",
                "responses": {"200": _text("the Prometheus text exposition format")},
            }
        },
        "/healthz": {"get": {"summary": "The process is up", "responses": {"200": _json(_ref("Status"), "up")}}},
        "/readyz": {
            "get": {
                "summary": "Redis answers",
                "responses": {"200": _json(_ref("Status"), "ready"), "503": UNAVAILABLE},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
            }
        },
    }
    _protect(paths, auth)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "stateservice",
            "version": __version__,
            "description": "State machines as a service for fleets: HTTP gates kept in Redis. "
            "Every error body is {error, message, status}.",
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": BEARER}},
    }


OPEN_PATHS = ("/healthz", "/readyz", "/leader", "/openapi.json")  # web/auth.py lets these through
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "a token from the --tokens file (`stateservice token create`); with --tls-client-ca a "
    "client certificate whose CN names a token also works",
}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": 'Bearer realm="stateservice"', "schema": {"type": "string"}}}


def _protect(paths: dict[str, Any], auth: bool) -> None:
    """Every operation but the probes may answer 401/403; with `auth` each also requires the bearer scheme."""
    for path, operations in paths.items():
        if path in OPEN_PATHS:
            continue
        for operation in operations.values():
            operation["responses"]["401"] = _error("no token, or an unknown one", headers=WWW_AUTHENTICATE)
            operation["responses"]["403"] = _error("the token lacks the scope, or the chart, this needs")
            if auth:
                operation["security"] = [{"bearer": []}]
