"""The dashboard's view models: pure functions of a chart, its snapshot, what the store read, and the time.

No I/O, no clock: `now` is a parameter, so the unit tests build every case by hand. The templates
only lay these out; every number, word and flag a page shows is decided here. `as_json` gives the
same models to the event stream, so `curl -N` reads what the page shows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson

from stateservice.core import rules
from stateservice.core.chart import Chart, Func, Snapshot
from stateservice.core.slots import Slot

PAGE_SIZE = 100  # charts an overview page shows


@dataclass(frozen=True, slots=True)
class Progress:
    """An increment state's counter: `counted` of the `target` reports that move it on."""

    state: str
    counted: int
    target: int
    current: bool

    @property
    def percent(self) -> int:
        return 100 if self.target <= 0 else max(0, min(100, self.counted * 100 // self.target))


@dataclass(frozen=True, slots=True)
class Limit:
    """`used` of `limit` (slots held of the concurrency; failures of the budget, `limit` None: no budget)."""

    used: int
    limit: int | None


@dataclass(frozen=True, slots=True)
class Summary:
    """One chart as the overview shows it."""

    name: str
    state: str
    final: bool
    entered_at: datetime
    halted: str | None
    halted_at: datetime | None
    due_at: datetime | None
    due_in: str | None
    progress: tuple[Progress, ...]
    slots: Limit | None
    failures: Limit | None
    approval: Mapping[str, Any] | None = None  # the pending approval (issue #16), when the chart waits for one
    kind: str = "increment"  # the current state's func (increment, time, approval), or final

    @property
    def status(self) -> str:
        """One word for the chart's condition, shown as text beside any colour: halted, waiting, running, done."""
        if self.halted is not None:
            return "halted"
        if self.approval is not None:
            return "waiting"
        return "done" if self.final else "running"


@dataclass(frozen=True, slots=True)
class Event:
    """One history record, as the timeline shows it."""

    id: str
    at: str | None
    from_state: str | None
    to_state: str | None
    cause: str | None
    host: str | None
    actor: str | None
    reason: str | None

    @property
    def move(self) -> bool:
        return self.from_state != self.to_state


@dataclass(frozen=True, slots=True)
class Hosts:
    """The hosts of the current visit: counted, failed ({host, at, reason}), holding slots, expired ({host, at})."""

    counted: tuple[str, ...]
    failed: tuple[Mapping[str, Any], ...]
    holding: tuple[Slot, ...]
    expired: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ChartPage:
    """Everything the chart page shows but the diagram (`svg.layout`)."""

    summary: Summary
    hosts: Hosts
    history: tuple[Event, ...]
    leader: Mapping[str, Any]
    redis_key: str
    redis_cli: str
    path: str = ""


@dataclass(frozen=True, slots=True)
class Overview:
    """One page of the overview: its charts, the filter, which page, and the configurations' counts."""

    charts: tuple[Summary, ...]
    query: str
    page: int
    pages: int
    total: int
    configurations: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = field(default=())
    broken: tuple[tuple[str, str], ...] = ()  # charts whose state could not be read: name, why

    @property
    def halted(self) -> int:
        return sum(1 for chart in self.charts if chart.halted is not None)

    @property
    def waiting(self) -> int:
        """Charts of this page with an approval pending."""
        return sum(1 for chart in self.charts if chart.approval is not None)


def duration(seconds: float) -> str:
    """A short human duration: `45s`, `3m 20s`, `2h 5m`, `3d 4h` (never negative)."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def progress(chart: Chart, snap: Snapshot, counters: Mapping[str, int]) -> tuple[Progress, ...]:
    """Every increment state's counted reports against its target, in the chart's order."""
    found = []
    for state in chart.states:
        if state.func is not Func.INCREMENT or state.counter is None or state.target is None:
            continue
        value = counters.get(state.name, state.counter.start)
        counted, current = value - state.counter.start, state.name == snap.state
        found.append(Progress(state.name, counted, rules.hosts_needed(state), current))
    return tuple(found)


def summarize(
    chart: Chart,
    snap: Snapshot,
    counters: Mapping[str, int],
    held: int,
    failures: int,
    now: datetime,
    approval: Mapping[str, Any] | None = None,
) -> Summary:
    """The overview's line of a chart: `held` slots and `failures` are its current state's."""
    state = chart.state(snap.state)
    due = rules.next_due(chart, snap) if state is not None else None
    slots = failed = None
    if state is not None and state.rollout.concurrency is not None:
        slots = Limit(held, state.rollout.concurrency)
    if state is not None and state.rollout.max_failures is not None and state.func is Func.INCREMENT:
        failed = Limit(failures, state.rollout.max_failures.limit(rules.hosts_needed(state)))
    elif failures:
        failed = Limit(failures, None)
    return Summary(
        name=chart.name,
        state=snap.state,
        final=bool(state and state.final),
        entered_at=snap.entered_at,
        halted=snap.halted,
        halted_at=snap.halted_at,
        due_at=due,
        due_in=duration((due - now).total_seconds()) if due is not None else None,
        progress=progress(chart, snap, counters),
        slots=slots,
        failures=failed,
        approval=approval,
        kind=state.func.value if state is not None and state.func is not None else "final",
    )


def event(record: Mapping[str, Any]) -> Event:
    """A history record as `ChartStore.history` returns it."""
    return Event(
        id=str(record.get("id")),
        at=record.get("at"),
        from_state=record.get("from"),
        to_state=record.get("to"),
        cause=record.get("cause"),
        host=record.get("host"),
        actor=record.get("actor"),
        reason=record.get("reason"),
    )


def chart_page(
    summary: Summary,
    counted: Sequence[str],
    failed: Sequence[Mapping[str, Any]],
    holding: Sequence[Slot],
    expired: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    leader: Mapping[str, Any],
    path: str = "",
) -> ChartPage:
    """The chart page: the summary, the current visit's hosts, the history (newest first), and where to look."""
    key = f"stateservice:{{{summary.name}}}"
    return ChartPage(
        summary=summary,
        hosts=Hosts(tuple(sorted(counted)), tuple(failed), tuple(holding), tuple(expired)),
        history=tuple(event(record) for record in history),
        leader=leader,
        redis_key=key,
        redis_cli=f"redis-cli HGETALL '{key}'",
        path=path,
    )


def pages(total: int, size: int = PAGE_SIZE) -> int:
    """How many pages `total` charts fill (at least one, empty as it may be)."""
    return max(1, -(-total // size))


def select(names: Sequence[str], query: str, page: int, size: int = PAGE_SIZE) -> tuple[list[str], int, int]:
    """The names (sorted) containing `query` (case-insensitive) on `page` (from 1, clamped): names, page, total."""
    needle = query.strip().lower()
    matching = sorted(name for name in names if needle in name.lower())
    page = max(1, min(page, pages(len(matching), size)))
    return matching[(page - 1) * size : page * size], page, len(matching)


def as_json(model: Any) -> dict[str, Any]:
    """A view model as the event stream sends it (datetimes as ISO 8601); a summary says its `status` too."""
    data = dict(orjson.loads(orjson.dumps(asdict(model))))
    if isinstance(model, Summary):
        data["status"] = model.status
    return data


def overview_json(overview: Overview) -> dict[str, Any]:
    """The overview as its event stream sends it."""
    data = as_json(overview)
    data["charts"] = [as_json(chart) for chart in overview.charts]
    return data


def version(data: Mapping[str, Any]) -> str:
    """A short, stable digest of an event's data: its SSE id (`Last-Event-ID` names what the client has seen).

    `due_in` is left out: it changes every second while nothing else does; so is the leader's `expires_at`, which
    every renewal of the lease moves (a client that reconnected would never match otherwise)."""
    stable = _stable(data)
    leader = stable.get("leader")
    if isinstance(leader, dict):
        stable["leader"] = {key: item for key, item in leader.items() if key != "expires_at"}
    return hashlib.sha256(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:16]


def _stable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _stable(item) for key, item in value.items() if key != "due_in"}
    if isinstance(value, list | tuple):
        return [_stable(item) for item in value]
    return value
