"""The dashboard's reads: what the store holds now, turned into view models (`view.py`) and a diagram (`svg.py`).

The pages and the event streams read through here, so a stream sends what a page shows. Each
read runs under the request's Redis deadline (`web/deadline.py`), as every API handler's does.
An overview page costs four round trips a BATCH of its charts (their states, caught up as
`GET /charts` does; their counters, slots and failures; then, of those waiting in approval
states, their continuation ids and contexts, and those continuations: `store/pending.py`),
however many charts are served. A transaction a chart runs only where a due move or a
continuation still to be made needs one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from stateservice.core.chart import Chart, Snapshot
from stateservice.dashboard import svg, view
from stateservice.dashboard.access import Viewer
from stateservice.errors import StateServiceError
from stateservice.store import codec, overview
from stateservice.store.lease import holder
from stateservice.store.pending import ensure_one, pending_many, waits
from stateservice.web import suspended
from stateservice.web.appkeys import APPROVALS, CHARTS, MACHINES, REDIS, REGISTRAR, STORE
from stateservice.web.deadline import redis_deadline
from stateservice.web.handlers import chart_named

HISTORY = 50  # records the chart page shows
CONFIGURATIONS = 50  # configurations the overview counts (the rest: GET /configurations)


def visible(request: web.Request, who: Viewer) -> list[str]:
    """The names of the served charts `who` may see."""
    return [name for name in request.app[CHARTS] if who.sees(name)]


async def overview_page(request: web.Request, who: Viewer, query: str, page: int) -> view.Overview:
    """The overview's page `page` of the charts whose names contain `query`."""
    charts = request.app[CHARTS]
    names, page, total = view.select(visible(request, who), query, page)
    picked = [charts[name] for name in names]
    async with redis_deadline(request):
        for _, error in await request.app[REGISTRAR].ensure_many(picked):
            raise error
        store = request.app[STORE]
        snaps = await store.current_states(picked)
        readable = [(c, s) for c, s in zip(picked, snaps, strict=True) if not isinstance(s, StateServiceError)]
        now = await store.clock()
        rollouts = await overview.rollouts(request.app[REDIS], readable, now)
        counted = await _configurations(request, who)
        approvals = await pending_many(request.app[APPROVALS], readable)
    summaries = []
    broken = {c.name: s.message for c, s in zip(picked, snaps, strict=True) if isinstance(s, StateServiceError)}
    for (chart, snap), rollout, approval in zip(readable, rollouts, approvals, strict=True):
        if isinstance(approval, StateServiceError):  # its continuation or context cannot be read: listed as broken
            broken[chart.name] = approval.message
            continue
        shown = suspended.document(chart, *approval) if approval else None
        summaries.append(view.summarize(chart, snap, rollout.counters, rollout.held, rollout.failures, now, shown))
    problems = tuple((name, broken[name]) for name in names if name in broken)  # in the page's order
    return view.Overview(tuple(summaries), query, page, view.pages(total), total, counted, problems)


async def pending_approval(request: web.Request, chart: Chart, snap: Snapshot) -> dict[str, Any] | None:
    """The chart's pending approval as GET /charts/{chart} shows it, when it waits in an approval state (the
    continuation is made now if the visit has none yet, as that route does)."""
    found = await ensure_one(request.app[APPROVALS], chart) if waits(chart, snap) else None
    return None if found is None else suspended.document(chart, *found)


async def _configurations(request: web.Request, who: Viewer) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    """The first CONFIGURATIONS configurations `who` may see, each with its instances per state."""
    machines = request.app[MACHINES]
    refs = [ref for ref in await machines.refs() if who.sees(ref.partition(":")[0])][:CONFIGURATIONS]
    found = []
    for ref in refs:
        configuration = await machines.configuration(ref)
        if configuration is not None:
            counts = await machines.counts(configuration)
            found.append((ref, tuple(counts.items())))
    return tuple(found)


async def chart_page(request: web.Request) -> tuple[view.ChartPage, svg.Diagram]:
    """The chart the path names (raises UnknownChart, InvalidName), as its page shows it."""
    async with redis_deadline(request):
        chart = await chart_named(request)
        store = request.app[STORE]
        shown = await store.view(chart)
        snap = shown.snapshot
        now = await store.clock()
        visit = await overview.visit(request.app[REDIS], chart, snap.state, now)
        history = await store.history(chart, HISTORY)
        leader = await holder(request.app[REDIS], now)
        approval = await pending_approval(request, chart, snap)
    summary = view.summarize(chart, snap, shown.counters, len(visit.slots), len(visit.failures), now, approval)
    expires = leader["expires_at"]
    leader = {**leader, "expires_at": codec.timestamp(expires) if expires else None}
    page = view.chart_page(
        summary, shown.hosts, visit.failures, visit.slots, visit.expired, history, leader, path=chart.path
    )
    return page, svg.layout(chart, snap.state)


def page_json(page: view.ChartPage) -> dict[str, Any]:
    """The chart page as its event stream sends it."""
    data = view.as_json(page)
    data["summary"] = view.as_json(page.summary)
    return data
