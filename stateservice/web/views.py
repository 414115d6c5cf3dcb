"""JSON shapes shared by the HTTP API and the CLI (`status --json` prints what `GET /charts/{chart}` does)."""

from __future__ import annotations

from typing import Any

from stateservice.core.approvals import Approval
from stateservice.store import codec
from stateservice.store.approvals import choices_document
from stateservice.store.charts import ChartView


def describe(view: ChartView) -> dict[str, Any]:
    """The JSON shape of `GET /charts/{chart}` (documented in docs/http-api.md)."""
    chart, snap = view.chart, view.snapshot
    current = chart.state(snap.state)
    return {
        "name": chart.name,
        "current_state": snap.state,
        "final": bool(current and current.final),
        "entered_at": codec.timestamp(snap.entered_at),
        "hosts_counted": view.hosts,
        "due_at": codec.timestamp(view.due_at) if view.due_at else None,
        "halted": snap.halted is not None,
        "halted_reason": snap.halted,
        "halted_at": codec.timestamp(snap.halted_at) if snap.halted_at else None,
        "digest": chart.digest,
        "states": [
            {
                "name": s.name,
                "func": s.func.value if s.func else None,
                "final": s.final,
                "counter": {"key": s.counter.key, "value": view.counters.get(s.name, s.counter.start)}
                if s.counter
                else None,
                "target": {"name": s.target.name, "when": {"key": s.target.key, "value": s.target.value}}
                if s.target
                else None,
                "concurrency": s.rollout.concurrency,
                "max_failures": str(s.rollout.max_failures) if s.rollout.max_failures else None,
                "windows": [str(w) for w in s.rollout.windows],
                **({"approval": approval(s.approval)} if s.approval else {}),
            }
            for s in chart.states
        ],
    }


def approval(found: Approval) -> dict[str, Any]:
    """An approval state's rules as the chart view shows them; whether it notifies, not where (a webhook's URL
    often holds its secret)."""
    timeout = found.timeout
    return {
        "choices": choices_document(found),
        "timeout": {"after": timeout.after.total_seconds(), "next": timeout.next} if timeout else None,
        "notify": found.notify is not None,
    }
