"""The one exception hierarchy.

Pure: every layer may import it. Each error we raise on purpose carries its data as
attributes and knows how the web layer answers it (`status`, `code`); `web/middleware.py`
is the only place that turns them into HTTP responses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


class StateServiceError(Exception):
    """Base of every error we raise on purpose; `status` is how the web layer answers."""

    status: int = 500
    code: str = "internal_error"
    always_headers: ClassVar[Mapping[str, str]] = {}  # response headers every answer of this error has

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        self.headers: dict[str, str] = dict(self.always_headers)  # extra response headers, e.g. Retry-After

    @classmethod
    def kept(cls, message: str, **fields: Any) -> StateServiceError:
        """This error as it was first answered (a kept outcome's message and fields), not built anew."""
        error = cls.__new__(cls)
        StateServiceError.__init__(error, message, **fields)
        return error

    def body(self) -> dict[str, Any]:
        """The JSON error body: `{"error", "message", "status", ...fields}`."""
        return {"error": self.code, "message": self.message, "status": self.status, **self.fields}


class BadRequest(StateServiceError):
    status, code = 400, "bad_request"


class MissingParameter(BadRequest):
    code = "missing_parameter"

    def __init__(self, name: str) -> None:
        super().__init__(f"query parameter {name!r} is required", parameter=name)


class InvalidName(BadRequest):
    code = "invalid_name"


class ChartRequired(BadRequest):
    code = "chart_required"

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(
            "several charts are served; choose one with ?chart=NAME (one of: " + ", ".join(names) + ")",
            charts=list(names),
        )


class UnknownChart(StateServiceError):
    status, code = 404, "unknown_chart"

    def __init__(self, chart: str, known: Sequence[str]) -> None:
        super().__init__(
            f"no chart named {chart!r}; served charts: {', '.join(known)}"
            if known
            else "this service serves no charts (start it with --chart FILE)",
            chart=chart,
            charts=list(known),
        )


class NotRegistered(StateServiceError):
    """`stateservice status`/`reset`: no chart of that name is registered in this Redis."""

    status, code = 404, "not_registered"


class UnknownState(StateServiceError):
    status, code = 404, "unknown_state"

    def __init__(self, chart: str, state: str, known: Sequence[str]) -> None:
        super().__init__(
            f"chart {chart!r} has no state {state!r}; its states: {', '.join(known)}",
            chart=chart,
            state=state,
            states=list(known),
        )


class NotCurrent(StateServiceError):
    """The gate is closed: the named state exists but is not the current one."""

    status, code = 406, "not_current"

    def __init__(self, chart: str, state: str, current: str) -> None:
        super().__init__(
            f"state {state!r} of chart {chart!r} is not current; the current state is {current!r}",
            chart=chart,
            state=state,
            current_state=current,
        )


class NotReportable(StateServiceError):
    """A PUT named the current state, but that state does not move by reports."""

    status, code = 409, "not_reportable"

    def __init__(self, chart: str, state: str, why: str) -> None:
        super().__init__(
            f"state {state!r} of chart {chart!r} {why}; reports cannot move it",
            chart=chart,
            state=state,
            current_state=state,
        )


class Halted(StateServiceError):
    """The chart is halted (its failure budget ran out, or an operator halted it): automation must stop, not wait."""

    status, code = 409, "halted"

    def __init__(self, chart: str, state: str, reason: str, halted_at: str | None = None) -> None:
        super().__init__(
            f"chart {chart!r} is halted in state {state!r}: {reason}; an operator resumes it with "
            f"`stateservice resume {chart}` (POST /charts/{chart}/resume)",
            chart=chart,
            current_state=state,
            reason=reason,
            halted_at=halted_at,
        )


class NoFreeSlot(StateServiceError):
    """Every slot of the state is held: ask again after Retry-After."""

    status, code = 406, "no_free_slot"

    def __init__(self, chart: str, state: str, held: int, limit: int, retry_after: int) -> None:
        super().__init__(
            f"all {limit} slots of state {state!r} of chart {chart!r} are held; ask again in {retry_after}s",
            chart=chart,
            state=state,
            held=held,
            limit=limit,
            retry_after=retry_after,
        )
        self.headers["Retry-After"] = str(retry_after)


class NoConcurrency(StateServiceError):
    """A slot was asked of a state that declares no `concurrency`: every host may go at once there."""

    status, code = 409, "no_concurrency"

    def __init__(self, chart: str, state: str) -> None:
        super().__init__(
            f"state {state!r} of chart {chart!r} declares no concurrency, so it has no slots; "
            "gate on it with GET /state, or add `concurrency: N` to the state",
            chart=chart,
            state=state,
        )


class OutsideWindow(StateServiceError):
    """The state's gate is outside its deployment windows (or on a blackout date) now."""

    status, code = 406, "outside_window"

    def __init__(self, chart: str, state: str, opens_at: str | None, retry_after: int | None) -> None:
        when = f"it opens at {opens_at}" if opens_at else "no window opens within ten years"
        super().__init__(
            f"state {state!r} of chart {chart!r} is outside its deployment windows now; {when}",
            chart=chart,
            state=state,
            opens_at=opens_at,
        )
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)


class CorruptState(StateServiceError):
    """What Redis holds for a chart cannot be read; an operator must repair it."""

    status, code = 500, "corrupt_state"


class StoreUnavailable(StateServiceError):
    """Redis did not answer (or too few replicas acknowledged a write); the caller should retry."""

    status, code = 503, "store_unavailable"

    def __init__(self, message: str = "Redis is unreachable; retry shortly", **fields: Any) -> None:
        super().__init__(message, **fields)


class InternalError(StateServiceError):
    """Anything we did not raise on purpose: the answer reveals nothing (the log has the traceback)."""

    status, code = 500, "internal_error"

    def __init__(self) -> None:
        super().__init__("internal error; see the service log")


# the codes of the answers aiohttp's router and server give (no such path, method, limits they enforce)
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    414: "uri_too_long",
    431: "headers_too_large",
}


class HTTPRefused(StateServiceError):
    """A request aiohttp refused before (or instead of) a handler: its status, and a code from `HTTP_CODES`."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.code = HTTP_CODES.get(status, f"http_{status}")
        super().__init__(message)


class ServiceStopping(StateServiceError):
    """The worker is shutting down; the caller should retry (another worker or the restarted one answers)."""

    status, code = 503, "stopping"

    def __init__(self) -> None:
        super().__init__("the service is stopping; retry shortly")


class StoreBusy(StateServiceError):
    """Too many concurrent writers kept invalidating our transaction; the caller may retry."""

    status, code = 503, "store_busy"

    def __init__(self, chart: str, attempts: int) -> None:
        super().__init__(
            f"chart {chart!r} is too busy: gave up after {attempts} conflicting attempts; retry",
            chart=chart,
        )


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a chart file: where it is and what is wrong."""

    path: str
    line: int  # 0: the problem is the path itself (a missing directory), no line of it
    message: str
    warning: bool = False

    def __str__(self) -> str:
        kind = "warning: " if self.warning else ""
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {kind}{self.message}"


class ChartError(StateServiceError):
    """Start-up only: a chart (or set of charts) cannot be served. `str()` lists `path:line: message`."""

    code = "chart_error"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class AslProblem:
    """One reason an Amazon States Language document does not import: where in it (a JSON path) and why."""

    path: str | None  # None: not a place in the document (the chart name asked for)
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class AslRefused(StateServiceError):
    """`import-asl`: the document uses what a chart cannot say; `problems` lists every one, in document order."""

    status, code = 422, "asl_refused"

    def __init__(self, problems: Sequence[AslProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems), problems=[str(p) for p in self.problems])


class StartupError(StateServiceError):
    """The service cannot start for a reason the operator must fix (message says how)."""

    code = "startup_error"


class ConfigError(StartupError):
    """A setting has a bad value; the message names where it came from."""

    code = "config_error"


class StateRemoved(StartupError):
    """The stored current state is not in the chart file any more; only a reset can go on."""

    status, code = 503, "state_removed"


class ModelConfigError(StartupError):
    """Start-up only: model configs that cannot be served. `str()` lists every `FILE: message`."""

    code = "model_config_error"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class InvalidJSON(BadRequest):
    code = "invalid_json"


class MissingField(BadRequest):
    code = "missing_field"

    def __init__(self, name: str, example: str) -> None:
        super().__init__(f"the body has no {name!r}; send {example}", field=name)


class InvalidField(BadRequest):
    code = "invalid_field"

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message, field=name)


class BodyTooLarge(StateServiceError):
    status, code = 413, "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is larger than the limit of {limit} bytes (--max-body)", limit=limit)


class UnknownModel(StateServiceError):
    status, code = 404, "unknown_model"

    def __init__(self, model: str, known: Sequence[str]) -> None:
        served = ", ".join(known) if known else "(none: start the service with --config DIR --models DIR)"
        super().__init__(f"no model named {model!r}; served models: {served}", model=model, models=list(known))


class ValuesRejected(StateServiceError):
    """The values are well-formed JSON rows, but the model cannot predict from them."""

    status, code = 422, "values_rejected"

    def __init__(self, model: str, message: str, **fields: Any) -> None:
        super().__init__(message, model=model, **fields)


class ModelUnavailable(StateServiceError):
    """The model's file could not be loaded and no earlier version of it is loaded."""

    status, code = 500, "model_unavailable"

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model!r} cannot be loaded: {reason}", model=model)
        self.reason = reason


class BadPrediction(StateServiceError):
    """The model predicted something that names none of its states: a fault of the model, not the caller."""

    status, code = 500, "bad_prediction"

    def __init__(self, model: str, message: str) -> None:
        super().__init__(message, model=model)


class PredictionFailed(StateServiceError):
    """The model's `predict` raised something other than a complaint about the values (a fault of the model)."""

    status, code = 500, "prediction_failed"

    def __init__(self, model: str, message: str) -> None:
        super().__init__(message, model=model)


class Unauthorized(StateServiceError):
    """No token, or one that matches no entry of the tokens file."""

    status, code = 401, "unauthorized"
    always_headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": 'Bearer realm="stateservice"'}

    def __init__(self, message: str) -> None:
        super().__init__(message)


class Forbidden(StateServiceError):
    """A known identity without the scope (or the chart) the request needs."""

    status, code = 403, "forbidden"

    def __init__(self, identity: str, scope: str, chart: str | None = None) -> None:
        where = f" on chart {chart!r}" if chart else ""
        super().__init__(
            f"{identity!r} may not {scope}{where}",
            identity=identity,
            scope=scope,
            **({"chart": chart} if chart else {}),
        )


class QueryTooLong(StateServiceError):
    status, code = 414, "uri_too_long"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the query string is longer than the limit of {limit} bytes", limit=limit)


class HeadersTooLarge(StateServiceError):
    status, code = 431, "headers_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request headers are larger than the limit of {limit} bytes in all", limit=limit)


# Configurations, instances and events (issue #15)


class InvalidConfiguration(StateServiceError):
    """A configuration (or instance request) that cannot be used; `problems` names every one."""

    status, code = 422, "invalid_configuration"

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems), problems=list(problems))


class ConfigurationExists(StateServiceError):
    status, code = 409, "configuration_exists"

    def __init__(self, ref: str) -> None:
        super().__init__(
            f"configuration {ref} exists: a configuration never changes; give it a new version", configuration=ref
        )


class UnknownConfiguration(StateServiceError):
    status, code = 404, "unknown_configuration"

    def __init__(self, ref: str) -> None:
        super().__init__(f"no configuration {ref} is defined (POST /configurations first)", configuration=ref)


class InstanceExists(StateServiceError):
    status, code = 409, "instance_exists"

    def __init__(self, instance: str, configuration: str) -> None:
        super().__init__(
            f"instance {instance!r} exists (of {configuration}); an id names one instance",
            id=instance,
            configuration=configuration,
        )


class UnknownInstance(StateServiceError):
    status, code = 404, "unknown_instance"

    def __init__(self, instance: str, **fields: Any) -> None:
        super().__init__(f"no instance {instance!r}", id=instance, **fields)


class UnknownEvent(StateServiceError):
    status, code = 404, "unknown_event"

    def __init__(self, instance: str, event_id: str) -> None:
        super().__init__(
            f"no outcome of event {event_id!r} is kept for instance {instance!r} (never sent, or older than "
            "--event-retention)",
            id=instance,
            event_id=event_id,
        )


class TransitionNotAllowed(StateServiceError):
    status, code = 409, "transition_not_allowed"

    def __init__(self, outcome: Mapping[str, Any], allowed: Sequence[str]) -> None:
        waiting = outcome.get("continuation")  # an instance in an approval state (issue #16)
        super().__init__(
            f"event {outcome['event']!r} is not allowed in state {outcome['state']!r}"
            + (f"; allowed: {', '.join(allowed)}" if allowed else "; no event is allowed there")
            + (f"; the instance awaits an approval: resume it with POST {waiting}" if waiting else ""),
            **outcome,
            allowed=list(allowed),
        )


class RequirementNotMet(StateServiceError):
    status, code = 409, "requirement_not_met"

    def __init__(self, outcome: Mapping[str, Any], requires: Mapping[str, Any]) -> None:
        super().__init__(
            f"event {outcome['event']!r} from {outcome['state']!r} requires {_requirement(requires)}",
            **outcome,
            requires=dict(requires),
        )


class EventRefused(StateServiceError):
    """A kept refusal of a kind this version does not know how to explain: answered with the kept outcome."""

    status, code = 409, "event_refused"

    def __init__(self, outcome: Mapping[str, Any]) -> None:
        fields = {k: v for k, v in outcome.items() if k != "message"}
        reason = outcome.get("message") or f"event {outcome.get('event_id')!r} was refused ({outcome.get('outcome')})"
        super().__init__(str(reason), **fields)


def _requirement(requires: Mapping[str, Any]) -> str:
    if "chart" in requires:
        return f"chart {requires['chart']!r} in state {requires['state']!r}"
    return (
        f"instance of {requires['configuration']} with properties {requires['properties']} in state "
        f"{requires['state']!r}"
    )


class UnknownConfigurationState(StateServiceError):
    status, code = 404, "unknown_state"

    def __init__(self, ref: str, state: str, known: Sequence[str]) -> None:
        super().__init__(
            f"configuration {ref} has no state {state!r}; its states: {', '.join(known)}",
            configuration=ref,
            state=state,
            states=list(known),
        )


class CsrfRefused(Forbidden):
    """A dashboard form posted without its session's CSRF token (another site's page, or a stale form)."""

    code = "csrf_refused"

    def __init__(self) -> None:
        StateServiceError.__init__(
            self, "the form's CSRF token does not match this session: reload the page and try again"
        )


class ForbiddenConfiguration(Forbidden):
    """A token with a `charts` list touching a configuration whose name the list does not hold."""

    def __init__(self, identity: str, scope: str, name: str) -> None:
        StateServiceError.__init__(
            self,
            f"{identity!r} may not {scope} on configuration {name!r} (its charts list names the configurations "
            "it may touch)",
            identity=identity,
            scope=scope,
            configuration=name,
        )


class AwaitingApproval(StateServiceError):
    """The gate's state is current but waits for a person: no Retry-After, since nobody can guess when they answer."""

    status, code = 406, "awaiting_approval"

    def __init__(self, chart: str, state: str, continuation: str | None) -> None:
        where = f"/continuations/{continuation}" if continuation else None
        super().__init__(
            f"state {state!r} of chart {chart!r} waits for an approval"
            + (f"; resume it with POST {where}" if where else ""),
            chart=chart,
            state=state,
            current_state=state,
            continuation=where,
        )


class UnknownContinuation(StateServiceError):
    status, code = 404, "unknown_continuation"

    def __init__(self, continuation: str) -> None:
        super().__init__(
            f"no continuation {continuation!r} (never made, or forgotten after --event-retention)",
            continuation=continuation,
        )


class ContinuationUsed(StateServiceError):
    """A continuation resumes once: the second resume is told the first one's outcome."""

    status, code = 409, "continuation_used"

    def __init__(self, continuation: str, outcome: Mapping[str, Any]) -> None:
        super().__init__(
            f"continuation {continuation!r} was used already (at {outcome.get('at')}, to {outcome.get('to')!r})",
            continuation=continuation,
            outcome=dict(outcome),
        )


class ContinuationExpired(StateServiceError):
    status, code = 410, "continuation_expired"

    def __init__(self, continuation: str, why: str, **fields: Any) -> None:
        super().__init__(
            f"continuation {continuation!r} can no longer resume: {why}", continuation=continuation, **fields
        )


class NoChoiceMatched(StateServiceError):
    """A resume's input matched no choice and the state has no default: the continuation stays usable."""

    status, code = 422, "no_choice_matched"

    def __init__(self, continuation: str, state: str, choices: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(
            f"the input matches no choice of state {state!r} and it has no default; send one of the choices' "
            "`when` fields (the continuation is still usable)",
            continuation=continuation,
            state=state,
            choices=list(choices),
        )


class ContextTooLarge(StateServiceError):
    status, code = 413, "context_too_large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the context would be {size:,} bytes as JSON, over the limit of {limit:,}; send smaller values",
            size=size,
            limit=limit,
        )
