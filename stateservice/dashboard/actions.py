"""The chart page's buttons: halt, resume, advance, forget a host, release a slot, approve.

`POST /dashboard/charts/{chart}/{action}` with a form: the CSRF token (checked first), the
scope the HTTP route needs (checked next, the same way), then a confirmation: without the
form's `confirmed=yes` (which the page's script adds once the person said yes, and the
confirmation page's own button sends) the answer is a page asking to confirm, and nothing is
done. Each action calls what its HTTP route calls (`Rollouts`), recorded in the history with the
signed-in token's name and the caller's address, then sends the browser back to the chart page.
Approving resumes the chart's pending continuation with the form's JSON object, as
`POST /continuations/{id}` does.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from aiohttp import web

from stateservice.core.chart import HOST_NAME, STATE_NAME, Chart
from stateservice.dashboard import access, pages
from stateservice.dashboard.access import Viewer
from stateservice.errors import (
    BadRequest,
    ContinuationExpired,
    ContinuationUsed,
    Forbidden,
    InvalidJSON,
    InvalidName,
    MissingParameter,
    NoChoiceMatched,
)
from stateservice.store.rollout import Rollouts, Who
from stateservice.telemetry import logs, metrics
from stateservice.web.appkeys import APPROVALS, ROLLOUTS
from stateservice.web.approvals import CONTINUATION_ID
from stateservice.web.deadline import redis_deadline
from stateservice.web.handlers import ALPHABETS, MAX_REASON, chart_named

log = structlog.get_logger(__name__)

QUESTIONS = {
    "halt": "Halt {chart}? Gates, slots and reports answer 409 until someone resumes it.",
    "resume": "Resume {chart}? Its gates, slots and reports work again.",
    "advance": "Advance {chart} to its next state now, whatever its counter or clock?",
    "forget": "Forget {host}'s report and failure in {chart}'s current state? It may report again.",
    "release": "Release {host}'s slot in {state} of {chart}?",
    "approve": "Resume {chart}'s approval in {state} with {input}?",
}


@pages.page
async def act(request: web.Request, who: Viewer) -> web.StreamResponse:
    """Check, confirm, then do the action the path names on the chart it names."""
    form = await request.post()
    await access.check_csrf(request, pages.field(form, "csrf"))
    action, name = request.match_info["action"], request.match_info["chart"]
    if action not in pages.ACTIONS:
        raise web.HTTPNotFound()
    if not who.may(pages.ACTIONS[action], name):
        raise Forbidden(who.name, pages.ACTIONS[action].value, name)
    fields = {
        "reason": _reason(pages.field(form, "reason")),
        "host": _name(pages.field(form, "host"), HOST_NAME, "host") if action in ("forget", "release") else None,
        "state": _name(pages.field(form, "state"), STATE_NAME, "state") if action in ("release", "approve") else None,
        "continuation": _continuation(pages.field(form, "continuation")) if action == "approve" else None,
        "input": _input(pages.field(form, "input")) if action == "approve" else None,
    }
    if pages.field(form, "confirmed") != "yes":
        question = QUESTIONS[action].format(
            chart=name, host=fields["host"], state=fields["state"], input=fields["input"]
        )
        context = {"action": action, "chart": name, "question": question, "fields": fields, "who": who}
        return pages.render(request, "confirm.html", {**context, "title": f"Confirm: {action}"})
    logs.bind(chart=name, action=action, host=fields["host"])
    async with redis_deadline(request):
        chart = await chart_named(request)
        if action == "approve":
            await _approve(request, chart, fields, Who(who.name, request.remote))
        else:
            await _do(request.app[ROLLOUTS], action, chart, fields, Who(who.name, request.remote))
    log.info("dashboard_action", chart=name, action=action)
    return access.redirect(request, f"/dashboard/charts/{name}")


async def _do(rollouts: Rollouts, action: str, chart: Any, fields: dict[str, Any], who: Who) -> None:
    if action == "halt":
        await rollouts.halt(chart, fields["reason"] or f"halted by {who.actor} from the dashboard", who)
    elif action == "resume":
        await rollouts.resume(chart, who)
    elif action == "advance":
        await rollouts.advance(chart, fields["reason"], who)
    elif action == "forget":
        await rollouts.forget(chart, fields["host"], who)
    else:
        await rollouts.release(chart, fields["state"], fields["host"], who)


async def _approve(request: web.Request, chart: Chart, fields: dict[str, Any], who: Who) -> None:
    """Resume the chart's continuation named by the form, as POST /continuations/{id} does."""
    approvals = request.app[APPROVALS]
    if (await approvals.owner(fields["continuation"])).name != chart.name:
        raise BadRequest(f"continuation {fields['continuation']!r} is not {chart.name!r}'s", parameter="continuation")
    try:
        await approvals.resume(fields["continuation"], orjson.loads(fields["input"]), who.actor, who.remote)
    except (ContinuationUsed, ContinuationExpired, NoChoiceMatched) as refused:
        metrics.approval({409: "used", 410: "expired"}.get(refused.status, "no_match"))
        raise
    metrics.approval("resumed")


def _continuation(raw: str | None) -> str:
    if not raw or not CONTINUATION_ID.fullmatch(raw):
        raise BadRequest("the form names no continuation: reload the page", parameter="continuation")
    return raw


def _input(raw: str | None) -> str:
    """The approval's input: a JSON object, given back as compact JSON. Raises BadRequest."""
    try:
        given = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        given = None
    if not isinstance(given, dict):
        raise BadRequest('the input must be a JSON object, such as {"approved": true}', parameter="input")
    try:
        return orjson.dumps(given).decode()
    except orjson.JSONEncodeError:  # orjson reads 1,024 levels but writes 254: as POST /continuations answers
        raise InvalidJSON("the input nests too deeply: at most 200 levels of objects and arrays") from None


def _reason(raw: str | None) -> str | None:
    """A reason as the HTTP routes take it: at most MAX_REASON characters, no control characters."""
    if not raw:
        return None
    if len(raw) > MAX_REASON or any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise BadRequest(f"reason must be at most {MAX_REASON} characters without control characters")
    return raw


def _name(raw: str | None, pattern: Any, what: str) -> str:
    if not raw:
        raise MissingParameter(what)
    if not pattern.fullmatch(raw):
        raise InvalidName(f"{raw[:80]!r} is not a valid {what} name ({ALPHABETS[what]})", parameter=what)
    return raw
