"""The pending continuations of many charts at once, for `GET /approvals` and the dashboard's overview.

`Approvals.ensure` is a WATCH/MULTI transaction a chart (about nine commands). A listing of
many charts waiting in approval states reads instead, in two scripts a BATCH of them, each
chart's state, continuation id and context, then those continuations' records; it calls
`ensure` only for a chart whose visit has no continuation yet, whose record needs repair, or
that moved meanwhile. The snapshots come from `ChartStore.current_states`, which has applied
the due timeouts already. A chart whose data cannot be read is that chart's error, not the
listing's: the others are still listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stateservice.core.chart import Chart, Func, Snapshot
from stateservice.errors import StateServiceError
from stateservice.store import bulk, keys
from stateservice.store.approvals import Approvals, Pending, decode, expiry, parse_context
from stateservice.store.charts import BATCH
from stateservice.store.redis.cluster import ClusterRedis

Found = tuple[Pending, dict[str, Any]]  # the continuation and the chart's context
Result = Found | StateServiceError | None  # None: the chart waits for no approval

HEAD = (keys.CURRENT_STATE, keys.CONTINUATION, keys.CONTEXT)


def waits(chart: Chart, snap: Snapshot) -> bool:
    """Whether the chart waits in an approval state, as `snap` says."""
    state = chart.state(snap.state)
    return state is not None and state.func is Func.APPROVAL


async def pending_many(approvals: Approvals, charts: Sequence[tuple[Chart, Snapshot]]) -> list[Result]:
    """Each chart's pending continuation and context (continuations made where a visit has none yet), None for a
    chart waiting in no approval state, or the StateServiceError reading that chart raised."""
    results: list[Result] = [None] * len(charts)
    at = [i for i, (chart, snap) in enumerate(charts) if waits(chart, snap)]
    if isinstance(approvals.store.redis, ClusterRedis):  # its scripts stay within one slot: one chart at a time
        for i in at:
            results[i] = await _ensured(approvals, charts[i][0])
        return results
    for start in range(0, len(at), BATCH):
        chunk = at[start : start + BATCH]
        for i, result in zip(chunk, await _read(approvals, [charts[i] for i in chunk]), strict=True):
            results[i] = result
    return results


async def _read(approvals: Approvals, charts: Sequence[tuple[Chart, Snapshot]]) -> list[Result]:
    redis = approvals.store.redis
    heads = await bulk.read_fields(redis, [keys.chart_state(chart.name) for chart, _ in charts], HEAD)
    named = [
        keys.chart_continuation(chart.name, head[1]) for (chart, _), head in zip(charts, heads, strict=True) if head[1]
    ]
    records = iter(await bulk.read_hashes(redis, named))
    found: list[Result] = []
    for (chart, snap), (state, continuation, context) in zip(charts, heads, strict=True):
        record = next(records) if continuation else {}
        try:
            kept = _kept(chart, snap, state, continuation, record)
            found.append((kept, parse_context(chart, context)) if kept else await ensure_one(approvals, chart))
        except StateServiceError as exc:
            found.append(exc)
    return found


def _kept(
    chart: Chart, snap: Snapshot, state: str | None, continuation: str | None, record: dict[str, str]
) -> Pending | None:
    """The stored continuation when it is the one `ensure` would answer without writing, else None (let `ensure`
    make or repair it). Raises CorruptState for a record that cannot be read."""
    approval = chart.state(snap.state)
    if state != snap.state or not continuation or not record or approval is None or approval.approval is None:
        return None
    pending = decode(continuation, chart.name, record)
    return pending if pending.answers(snap.state, expiry(approval.approval, snap)) else None


async def ensure_one(approvals: Approvals, chart: Chart) -> Found | None:
    """The chart's pending continuation (made now if its visit has none yet) and context; None when it waits in no
    approval state."""
    _, pending = await approvals.ensure(chart)
    return None if pending is None else (pending, await approvals.context(chart))


async def _ensured(approvals: Approvals, chart: Chart) -> Result:
    try:
        return await ensure_one(approvals, chart)
    except StateServiceError as exc:
        return exc
