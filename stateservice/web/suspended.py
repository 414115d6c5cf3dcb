"""What the chart routes show of approvals: a continuation's JSON, a gate's awaiting_approval, a chart's pending one.

Apart from `web/approvals.py` (the continuations' own routes), which uses the chart handlers; these
are used by them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from stateservice.core import rules
from stateservice.core.chart import Chart, Func
from stateservice.errors import AwaitingApproval, StateServiceError
from stateservice.store import codec
from stateservice.store.approvals import Pending, choices_document, parse_context
from stateservice.store.charts import ChartView
from stateservice.web.appkeys import APPROVALS


def document(chart: Chart, pending: Pending, context: dict[str, Any]) -> dict[str, Any]:
    """The JSON shape of a continuation (GET /continuations/{id}, GET /approvals, GET /charts/{chart})."""
    state = chart.state(pending.state)
    approval = state.approval if state is not None else None
    timeout = approval.timeout if approval is not None else None
    return {
        "id": pending.id,
        "continuation_url": f"/continuations/{pending.id}",
        "chart": chart.name,
        "state": pending.state,
        "status": pending.status,
        "created_at": codec.timestamp(pending.created_at),
        "expires_at": codec.timestamp(pending.expires_at) if pending.expires_at else None,
        "context": context,
        "choices": choices_document(approval) if approval is not None else [],
        "timeout": {"after": timeout.after.total_seconds(), "next": timeout.next} if timeout else None,
        "notified_at": codec.timestamp(pending.notified_at) if pending.notified_at else None,
        "notify_attempts": pending.notify_attempts,
        **({"outcome": pending.outcome} if pending.outcome is not None else {}),
    }


def has_approvals(chart: Chart) -> bool:
    return any(s.func is Func.APPROVAL for s in chart.states)


async def awaiting(request: web.Request, chart: Chart, refused: AwaitingApproval) -> StateServiceError:
    """A gate's awaiting_approval, naming the continuation (made now if the visit has none yet); the gate's
    answer anew when the chart left the state meanwhile (its timeout fell due)."""
    if refused.fields.get("continuation"):
        return refused
    state = str(refused.fields["state"])
    snap, pending = await request.app[APPROVALS].ensure(chart)
    if pending is None or pending.state != state:
        try:
            rules.check(chart, snap, state)
        except StateServiceError as answer:
            return answer
    return AwaitingApproval(chart.name, state, pending.id if pending else None)


async def pending_of(request: web.Request, view: ChartView) -> dict[str, Any]:
    """What GET /charts/{chart} adds: `pending_approval` (or null) and the chart's `context` (as `view` read it)."""
    chart = view.chart
    context = parse_context(chart, view.context)
    current = chart.state(view.snapshot.state)
    if current is None or current.approval is None:
        return {"pending_approval": None, "context": context}
    approvals = request.app[APPROVALS]
    _, pending = await approvals.ensure(chart)
    if pending is not None:  # made just now, or a resume merged input since the view read it
        context = await approvals.context(chart)
    return {"pending_approval": document(chart, pending, context) if pending else None, "context": context}
