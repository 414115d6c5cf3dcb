"""Thin handlers: parse the request, ask the store and the rules, answer.

Each handler that needs Redis does all of its Redis work within one deadline (`web/deadline.py`).

`/state` answers 200 with the state name as plain text (what curl, Chef `only_if` and
Ansible `uri` look at); everything else, errors included, is JSON.
"""

from __future__ import annotations

import bisect
from typing import Any

import structlog
from aiohttp import web

from stateservice.core import rules
from stateservice.core.chart import CHART_NAME, HOST_NAME, STATE_NAME, Chart
from stateservice.errors import (
    AwaitingApproval,
    BadRequest,
    ChartRequired,
    InvalidName,
    MissingParameter,
    NotCurrent,
    StateServiceError,
    UnknownChart,
)
from stateservice.store import codec
from stateservice.store.charts import ChartStore
from stateservice.store.lease import holder
from stateservice.store.rollout import Who
from stateservice.telemetry import logs
from stateservice.web import auth, longpoll, suspended
from stateservice.web.appkeys import CHARTS, MAX_WAIT, REDIS, REGISTRAR, ROLLOUTS, STORE, WATCHER, ZONE
from stateservice.web.deadline import redis_deadline
from stateservice.web.views import describe

log = structlog.get_logger(__name__)

HISTORY_DEFAULT, HISTORY_MAX = 100, 1000
LIST_MAX = 1000  # charts a page of GET /charts holds at most
COUNTED_HEADER = "Stateservice-Counted"
HALTED_HEADER = "Stateservice-Halted"  # on a failure report: true when it used up the budget and halted the chart
MAX_REASON = 200  # characters of a failure's or a halt's reason kept
STATE_HEADER = "Stateservice-State"


# what each name may hold, said in full: a host name of an inventory (`db-1.example.com:5432`, `deploy@web1`) is
# refused with every character it may use, not a partial list that leaves the user guessing
ALPHABETS = {
    "state": "letters, digits, '.', '_', '-'; starting with a letter or digit; at most 128",
    "chart": "letters, digits, '.', '_', '-'; starting with a letter or digit; at most 64",
    "host": "letters, digits, '.', '_', '-', ':', '@'; starting with a letter or digit; at most 253",
}


def name_param(request: web.Request, name: str, pattern: Any, what: str) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if not pattern.fullmatch(value):
        raise InvalidName(f"{name}={value[:80]!r} is not a valid {what} name ({ALPHABETS[what]})", parameter=name)
    return value


def state_param(request: web.Request) -> str:
    state = name_param(request, "state", STATE_NAME, "state")
    if state is None:
        raise MissingParameter("state")
    return state


async def chart_named(request: web.Request) -> Chart:
    """The chart named by the path or `?chart=`, or the only one served; registered in Redis first."""
    charts = request.app[CHARTS]
    name = request.match_info.get("chart")
    if name is not None and not CHART_NAME.fullmatch(name):
        raise InvalidName(f"{name[:80]!r} is not a valid chart name", parameter="chart")
    name = name or name_param(request, "chart", CHART_NAME, "chart")
    if name is None:
        if not charts:
            raise UnknownChart("", [])  # a models-only service: no gate to ask
        if len(charts) != 1:
            raise ChartRequired(sorted(charts))
        name = next(iter(charts))
    chart = charts.get(name)
    if chart is None:
        raise UnknownChart(name, sorted(charts))
    await request.app[REGISTRAR].ensure(chart)
    return chart


def _store(request: web.Request) -> ChartStore:
    return request.app[STORE]


def _text(state: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=state + "\n", content_type="text/plain", headers=headers)


async def get_state(request: web.Request) -> web.Response:
    """GET /state?state=X[&wait=S]: 200 when X is current (or becomes so within S seconds), else 406.

    404 when X is no state of the chart. A 406 carries Retry-After.
    """
    store = _store(request)
    async with redis_deadline(request):
        chart = await chart_named(request)
        state = state_param(request)
        wait = longpoll.wait_param(request, request.app[MAX_WAIT])
        snap = await store.current_state(chart)
        try:
            rules.check(chart, snap, state)
        except NotCurrent as exc:
            if wait <= 0:
                raise await longpoll.refused(store, chart, snap, exc) from None
        except AwaitingApproval as exc:
            raise await suspended.awaiting(request, chart, exc) from None
        else:
            await _check_window(request, chart, state)
            return _text(state)
    # waiting is no Redis work: the long-poll gives each of its reads a deadline of its own
    await longpoll.wait_until_current(request, store, request.app[WATCHER], chart, state, wait)
    async with redis_deadline(request):
        if (found := chart.state(state)) is not None and found.approval is not None:  # current, but not open
            raise await suspended.awaiting(request, chart, AwaitingApproval(chart.name, state, None))
        await _check_window(request, chart, state)
    return _text(state)


async def _check_window(request: web.Request, chart: Chart, state: str) -> None:
    """Raise OutsideWindow when the current state `state` has deployment windows and now is outside them."""
    found = chart.state(state)
    if found is not None and found.rollout.timed:  # the clock is read only for states with windows
        rules.check_window(chart, state, await _store(request).clock(), request.app[ZONE])


async def put_state(request: web.Request) -> web.Response:
    """PUT /state?state=X[&host=H][&result=failure&reason=R]: count a report of X, or record H's failure of X.

    406 when X is not current, 409 when it cannot move or the chart is halted.
    """
    if _result(request) == "failure":
        return await _put_failure(request)
    async with redis_deadline(request):
        chart = await chart_named(request)
        state = state_param(request)
        host = name_param(request, "host", HOST_NAME, "host")
        logs.bind(chart=chart.name, state=state, host=host)
        result = await _store(request).report(chart, state, host, actor=auth.identity(request), remote=request.remote)
    if not result.counted:
        log.info("report_repeated", count=result.count)
    return _text(
        state,
        {COUNTED_HEADER: "true" if result.counted else "false", STATE_HEADER: result.snapshot.state},
    )


def _result(request: web.Request) -> str:
    result = request.query.get("result", "success")
    if result not in ("success", "failure"):
        raise BadRequest(f"result={result[:20]!r} must be success or failure", parameter="result")
    return result


def who(request: web.Request) -> Who:
    """Who asked, for the history: the token's name (or certificate CN, or `-`) and the caller's address."""
    return Who(auth.identity(request), request.remote)


def reason_param(request: web.Request, required: bool = False) -> str | None:
    """`?reason=`: free text for the history, at most MAX_REASON characters, no control characters."""
    raw = request.query.get("reason")
    if not raw:
        if required:
            raise MissingParameter("reason")
        return None
    if len(raw) > MAX_REASON or any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise BadRequest(
            f"reason must be at most {MAX_REASON} characters without control characters (got {len(raw)})",
            parameter="reason",
        )
    return raw


async def _put_failure(request: web.Request) -> web.Response:
    """H failed X: recorded once a visit, not counted, H's slot freed; the chart halts when X's budget runs out."""
    async with redis_deadline(request):
        chart = await chart_named(request)
        state = state_param(request)
        host = name_param(request, "host", HOST_NAME, "host")
        if host is None:
            raise MissingParameter("host")  # a failure is a host's: without one it could not be listed or forgotten
        reason = reason_param(request)
        logs.bind(chart=chart.name, state=state, host=host)
        failure = await request.app[ROLLOUTS].fail(chart, state, host, reason, who(request))
    halted = failure.snapshot is not None and failure.snapshot.halted is not None
    log.info("failure_reported", failures=failure.failures, new=failure.recorded, halted=halted)
    return _text(state, {COUNTED_HEADER: "false", STATE_HEADER: state, HALTED_HEADER: "true" if halted else "false"})


async def list_charts(request: web.Request) -> web.Response:
    """GET /charts[?limit=N[&cursor=C]]: every served chart (the caller may see) and its state; by pages if asked.

    Names in order; with `limit`, at most that many from after `cursor`, and the next page's
    `cursor` (null on the last page). Registration and the reads are pipelined, BATCH charts a
    round trip, so 10,000 charts cost some 20 round trips, not 10,000.
    """
    charts = request.app[CHARTS]
    limit = _limit(request, "limit", LIST_MAX, None)
    after = _cursor(request)
    names = sorted(name for name in charts if auth.visible(request, name))  # a bound token learns of no others
    if after is not None:
        names = names[bisect.bisect_right(names, after) :]
    page = [charts[name] for name in (names if limit is None else names[:limit])]
    body = []
    async with redis_deadline(request):
        for _, error in await request.app[REGISTRAR].ensure_many(page):
            raise error
        snaps = await _store(request).current_states(page)
    for chart, snap in zip(page, snaps, strict=True):
        if isinstance(snap, StateServiceError):
            raise snap
        body.append({"name": chart.name, "current_state": snap.state})
    answer: dict[str, Any] = {"charts": body}
    if limit is not None:
        answer["cursor"] = page[-1].name if len(names) > limit else None
    return web.json_response(answer)


def _limit(request: web.Request, name: str, most: int, default: int | None) -> int | None:
    """The whole number `?name=` from 1 to `most`, or `default` without one. Raises BadRequest."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= most:
        raise BadRequest(f"{name}={raw[:20]!r} must be a whole number from 1 to {most}", parameter=name)
    return int(raw)


def _cursor(request: web.Request) -> str | None:
    """The chart name `?cursor=` holds: the last of the page before (opaque to callers). Raises BadRequest."""
    raw = request.query.get("cursor")
    if raw is None:
        return None
    if not CHART_NAME.fullmatch(raw):
        raise BadRequest(f"cursor={raw[:40]!r} is not a cursor this service gave", parameter="cursor")
    return raw


async def show_chart(request: web.Request) -> web.Response:
    async with redis_deadline(request):
        chart = await chart_named(request)
        view = await _store(request).view(chart)
        rollout = await request.app[ROLLOUTS].detail(chart, view.snapshot)
        approval = await suspended.pending_of(request, view)
    return web.json_response({**describe(view), **rollout, **approval})


async def chart_history(request: web.Request) -> web.Response:
    async with redis_deadline(request):
        chart = await chart_named(request)
        limit = _limit(request, "limit", HISTORY_MAX, HISTORY_DEFAULT)
        assert limit is not None
        history = await _store(request).history(chart, limit)
    return web.json_response({"chart": chart.name, "history": history})


async def reset_chart(request: web.Request) -> web.Response:
    """POST /charts/{chart}/reset[?host=H]: back to the initial state (admin scope), recorded in history."""
    async with redis_deadline(request):
        chart = await chart_named(request)
        host = name_param(request, "host", HOST_NAME, "host")
        logs.bind(chart=chart.name, host=host)
        move = await _store(request).reset(chart, host, actor=auth.identity(request), remote=request.remote)
    return web.json_response(
        {"chart": chart.name, "from": move.from_state or None, "to": move.to_state, "at": codec.timestamp(move.at)}
    )


async def healthz(request: web.Request) -> web.Response:
    """The process is up (it says nothing about Redis: that is /readyz)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to serve: Redis answers. 503 (JSON error) while it does not."""
    async with redis_deadline(request):
        await request.app[REDIS].ping()
    return web.json_response({"status": "ready"})


async def leader(request: web.Request) -> web.Response:
    """Which worker holds the time-state leader lease: `{"id", "pid", "expires_at"}` or `{"id": null}`."""
    async with redis_deadline(request):
        now = await _store(request).clock()
        current = await holder(request.app[REDIS], now)
    expires = current["expires_at"]
    return web.json_response({**current, "expires_at": codec.timestamp(expires) if expires else None})
