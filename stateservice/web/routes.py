"""The route table: every endpoint in one place, with what the OpenAPI document says of it.

`setup_routes` registers each route with aiohttp; `GET /openapi.json` (`openapi_json`) is
the document `web/openapi.py` builds from this same table, so a route added here is
served and documented at once. docs/http-api.md's table mirrors it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from stateservice.errors import (
    AwaitingApproval,
    BadPrediction,
    BadRequest,
    BodyTooLarge,
    CorruptState,
    Halted,
    ModelUnavailable,
    NoConcurrency,
    NoFreeSlot,
    NotCurrent,
    NotReportable,
    OutsideWindow,
    PredictionFailed,
    QueryTooLong,
    ServiceStopping,
    StateRemoved,
    StoreBusy,
    StoreUnavailable,
    UnknownChart,
    UnknownModel,
    UnknownState,
    ValuesRejected,
)
from stateservice.web import (
    approvals,
    auth,
    handlers,
    machine_events,
    machines,
    machines_openapi,
    predict,
    prometheus,
    rollout,
)
from stateservice.web.appkeys import MAX_WAIT
from stateservice.web.openapi import (
    P_CHART,
    P_HOST,
    Q_CHART,
    Q_HOST,
    Q_REASON,
    Q_RESULT,
    Q_STATE,
    Q_STATE_OPTIONAL,
    Operation,
    Refusal,
    document,
    json_answer,
    q_wait,
    text_answer,
)

# any segment, braces included: a malformed chart name gets a 400 that says why, not a bare 404
CHART = "/charts/{chart:[^/]+}"
CONFIGURATION = "/configurations/{name:[^/:]+}:{version:[^/]+}"
INSTANCE = "/statemachines/{id:[^/]+}"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    doc: Operation


# what the chart routes may answer instead of their 200
UNAVAILABLE = Refusal(
    (StoreUnavailable, StateRemoved, ServiceStopping, StoreBusy),
    "Redis is unreachable, the chart needs a reset, or the worker is stopping",
)
CHART_REFUSALS = (
    Refusal((BadRequest,), "a parameter is missing or malformed (the message says which)"),
    Refusal((UnknownChart, UnknownState), "no such chart is served, or (on /state) no such state in the chart"),
    Refusal((CorruptState,), "the stored state is corrupt"),
    UNAVAILABLE,
)
COUNTED_HEADERS = {
    handlers.COUNTED_HEADER: {"description": "true: counted now; false: already counted", "schema": {"type": "string"}},
    handlers.STATE_HEADER: {"description": "the chart's current state after the report", "schema": {"type": "string"}},
}


HALTED = Refusal((Halted,), "the chart is halted: stop, do not wait (an operator resumes it)")
# a free-text `reason` is what can make a legitimate query string long enough for the service's limit
TOO_LONG = Refusal((QueryTooLong,), "the query string is over the service's limit (shorten the reason)")


def _gate(chart: dict[str, Any]) -> tuple[Operation, Operation]:
    """GET and PUT of a chart's state; `chart` is how the chart is named (path or query)."""
    get = Operation(
        "Is STATE the chart's current state? 200 yes, 406 not (yet)",
        text_answer("the state is current; the body is its name"),
        [Q_STATE, chart, q_wait],
        [
            Refusal(
                (NotCurrent, OutsideWindow, AwaitingApproval),
                "the state is not current, or outside its windows (with Retry-After), or it waits for an approval "
                "(awaiting_approval, with the continuation; no Retry-After)",
                retry_after=True,
            ),
            HALTED,
            *CHART_REFUSALS,
        ],
    )
    put = Operation(
        "Report STATE done (count it, and move the chart on when enough have reported), or failed (result=failure)",
        text_answer("counted (or already counted for this host), or the failure recorded", COUNTED_HEADERS),
        [Q_STATE, chart, Q_HOST, Q_RESULT, Q_REASON],
        [
            Refusal((NotCurrent,), "the state is not current"),
            Refusal((NotReportable, Halted), "the state is final or moves by the clock, or the chart is halted"),
            TOO_LONG,
            *CHART_REFUSALS,
        ],
    )
    return get, put


def _slots(chart: dict[str, Any]) -> tuple[Operation, Operation]:
    """PUT and DELETE of a host's slot; `chart` is how the chart is named (path or query)."""
    take = Operation(
        "Take (or renew) HOST's slot in STATE: at most `concurrency` hosts hold one at once",
        json_answer("Slot", "granted or renewed; ask again before expires_at to keep it"),
        [P_HOST, Q_STATE, chart],
        [
            Refusal(
                (NoFreeSlot, NotCurrent, OutsideWindow),
                "every slot is held, the state is not current, or it is outside its windows",
                retry_after=True,
            ),
            Refusal((NoConcurrency, Halted), "the state has no concurrency, or the chart is halted"),
            *CHART_REFUSALS,
        ],
    )
    release = Operation(
        "Release HOST's slot in STATE (idempotent); a counted or failed report releases it too",
        json_answer("Released", "released, or held none"),
        [P_HOST, Q_STATE, chart],
        [Refusal((NoConcurrency,), "the state has no concurrency"), *CHART_REFUSALS],
    )
    return take, release


GET_STATE, PUT_STATE = _gate(Q_CHART)
GET_CHART_STATE, PUT_CHART_STATE = _gate(P_CHART)
PUT_SLOT, DELETE_SLOT = _slots(Q_CHART)
PUT_CHART_SLOT, DELETE_CHART_SLOT = _slots(P_CHART)
POST_STATE = Operation(
    "Which state is this machine in? A hosted model predicts one state per row",
    {
        "description": "one state per row (JSON, or text lines when text/plain is preferred)",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Prediction"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    refusals=[
        Refusal((BadRequest,), "the body is not JSON, or not {name, values} with rows of numbers"),
        Refusal((UnknownModel,), "no model of that name (or no models served)"),
        Refusal((BodyTooLarge,), "the body is over --max-body"),
        Refusal((ValuesRejected,), "the model cannot predict from these rows (e.g. wrong width)"),
        Refusal(
            (ModelUnavailable, BadPrediction, PredictionFailed),
            "the model failed or predicted something that is none of its states",
        ),
    ],
    body={
        "type": "object",
        "required": ["name", "values"],
        "properties": {
            "name": {"type": "string"},
            "values": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        },
    },
)
Q_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": f"how many records (default {handlers.HISTORY_DEFAULT})",
    "schema": {"type": "integer", "minimum": 1, "maximum": handlers.HISTORY_MAX},
}

Q_PAGE = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "at most this many charts, and the next page's `cursor` (default: every chart, no cursor)",
    "schema": {"type": "integer", "minimum": 1, "maximum": handlers.LIST_MAX},
}
Q_CURSOR = {
    "name": "cursor",
    "in": "query",
    "required": False,
    "description": "the `cursor` of the page before (opaque); with `limit`",
    "schema": Q_CHART["schema"],
}


async def openapi_json(request: web.Request) -> web.Response:
    """The API contract (OpenAPI 3.0) of the routes below."""
    return web.json_response(document(ROUTES, request.app[MAX_WAIT], auth=request.app[auth.AUTH_ON]))


ROUTES = (
    Route("GET", "/state", handlers.get_state, GET_STATE),
    Route("PUT", "/state", handlers.put_state, PUT_STATE),
    Route("POST", "/state", predict.post_state, POST_STATE),
    Route(
        "GET",
        "/charts",
        handlers.list_charts,
        Operation(
            "Every served chart and its current state, by name; in pages when `limit` is given",
            json_answer("ChartList", "the charts"),
            [Q_PAGE, Q_CURSOR],
            [Refusal((BadRequest,), "limit or cursor is malformed (the message says which)"), UNAVAILABLE],
        ),
    ),
    Route(
        "GET",
        CHART,
        handlers.show_chart,
        Operation(
            "A chart: current state, when entered, when due, counters, hosts counted",
            json_answer("Chart", "the chart"),
            [P_CHART],
            CHART_REFUSALS,
        ),
    ),
    Route("GET", CHART + "/state", handlers.get_state, GET_CHART_STATE),
    Route("PUT", CHART + "/state", handlers.put_state, PUT_CHART_STATE),
    Route(
        "GET",
        CHART + "/history",
        handlers.chart_history,
        Operation(
            "The chart's transitions and resets, newest first",
            json_answer("History", "the records"),
            [P_CHART, Q_LIMIT],
            CHART_REFUSALS,
        ),
    ),
    Route("PUT", "/slots/{host}", rollout.take_slot, PUT_SLOT),
    Route("DELETE", "/slots/{host}", rollout.release_slot, DELETE_SLOT),
    Route("PUT", CHART + "/slots/{host}", rollout.take_slot, PUT_CHART_SLOT),
    Route("DELETE", CHART + "/slots/{host}", rollout.release_slot, DELETE_CHART_SLOT),
    Route(
        "GET",
        CHART + "/slots",
        rollout.list_slots,
        Operation(
            "Who holds the slots of STATE (default: the current state), oldest first",
            json_answer("Slots", "the holders"),
            [P_CHART, Q_STATE_OPTIONAL],
            [Refusal((NoConcurrency,), "the state has no concurrency"), *CHART_REFUSALS],
        ),
    ),
    Route(
        "POST",
        CHART + "/halt",
        rollout.halt_chart,
        Operation(
            "Halt the chart in its current state (admin scope): gates, slots and reports answer 409 until resumed",
            json_answer("Halt", "halted (halting a halted chart changes nothing)"),
            [P_CHART, Q_REASON],
            [TOO_LONG, *CHART_REFUSALS],
        ),
    ),
    Route(
        "POST",
        CHART + "/resume",
        rollout.resume_chart,
        Operation(
            "Resume a halted chart (admin scope); its failures stay recorded",
            json_answer("Halt", "resumed (or was not halted)"),
            [P_CHART],
            CHART_REFUSALS,
        ),
    ),
    Route(
        "POST",
        CHART + "/advance",
        rollout.advance_chart,
        Operation(
            "Move the chart to its current state's target now (admin scope), recorded with cause `operator`",
            json_answer("Reset", "moved"),
            [P_CHART, Q_REASON],
            [Refusal((NotReportable,), "the current state is final"), TOO_LONG, *CHART_REFUSALS],
        ),
    ),
    Route(
        "POST",
        CHART + "/forget",
        rollout.forget_host,
        Operation(
            "Forget HOST's report and failure in the current state's visit (admin scope): it may report again",
            json_answer("Forgotten", "what was forgotten (both false: nothing)"),
            [P_CHART, {**Q_HOST, "required": True}],
            CHART_REFUSALS,
        ),
    ),
    Route(
        "POST",
        CHART + "/reset",
        handlers.reset_chart,
        Operation(
            "Put the chart back to its initial state (admin scope); recorded in its history",
            json_answer("Reset", "the chart was reset"),
            [P_CHART, Q_HOST],
            CHART_REFUSALS,
        ),
    ),
    Route("POST", "/configurations", machines.post_configuration, machines_openapi.POST_CONFIGURATION),
    Route("GET", "/configurations", machines.list_configurations, machines_openapi.LIST_CONFIGURATIONS),
    Route("GET", CONFIGURATION, machines.get_configuration, machines_openapi.GET_CONFIGURATION),
    Route("GET", CONFIGURATION + "/counts", machines.configuration_counts, machines_openapi.COUNTS),
    Route("POST", "/statemachines", machines.post_instance, machines_openapi.POST_INSTANCE),
    Route("GET", "/statemachines", machines.list_instances, machines_openapi.LIST_INSTANCES),
    Route("GET", INSTANCE, machines.get_instance, machines_openapi.GET_INSTANCE),
    Route("DELETE", INSTANCE, machines.delete_instance, machines_openapi.DELETE_INSTANCE),
    Route("POST", INSTANCE + "/events", machine_events.post_instance_event, machines_openapi.POST_INSTANCE_EVENT),
    Route("GET", INSTANCE + "/events/{event_id:[^/]+}", machine_events.get_event, machines_openapi.GET_EVENT),
    Route("POST", "/events", machine_events.post_event, machines_openapi.POST_EVENT),
    Route("GET", "/continuations/{id}", approvals.get_continuation, approvals.GET_CONTINUATION),
    Route("POST", "/continuations/{id}", approvals.post_continuation, approvals.POST_CONTINUATION),
    Route("GET", "/approvals", approvals.list_approvals, approvals.LIST_APPROVALS),
    Route("GET", "/healthz", handlers.healthz, Operation("The process is up", json_answer("Status", "up"))),
    Route(
        "GET",
        "/readyz",
        handlers.readyz,
        Operation("Redis answers", json_answer("Status", "ready"), [], [UNAVAILABLE]),
    ),
    Route(
        "GET",
        "/leader",
        handlers.leader,
        Operation(
            "Which worker advances time states now", json_answer("Leader", "the leader, or id null"), [], [UNAVAILABLE]
        ),
    ),
    Route(
        "GET",
        "/openapi.json",
        openapi_json,
        Operation("This document", json_answer({"type": "object"}, "the OpenAPI document")),
    ),
    Route(
        "GET",
        "/models",
        predict.list_models,
        Operation("The served models: states, file digest, load time", json_answer("Models", "the models")),
    ),
    Route(
        "GET",
        "/metrics",
        prometheus.serve_metrics,
        Operation(
            "Prometheus metrics, every worker's added up (read scope)",
            text_answer("the Prometheus text exposition format"),
        ),
    ),
)


def setup_routes(app: web.Application) -> None:
    for route in ROUTES:
        if route.method == "GET":
            app.router.add_get(route.path, route.handler)  # and HEAD, as aiohttp does for a GET
        else:
            app.router.add_route(route.method, route.path, route.handler)
