"""The transition rules: (chart, snapshot, event, now) -> next snapshot, or a refusal.

Pure: time arrives as a parameter and nothing here reads Redis; `store/charts.py` reads a
snapshot, asks these functions what follows, and writes the answer in one transaction.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Set
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from stateservice.core import approvals, budget, timing, windows
from stateservice.core.chart import Chart, Func, Snapshot, State, Transition
from stateservice.errors import (
    AwaitingApproval,
    CorruptState,
    Halted,
    NotCurrent,
    NotReportable,
    OutsideWindow,
    StateRemoved,
    UnknownState,
)


@dataclass(frozen=True, slots=True)
class Report:
    """What one report did: the snapshot after it, whether it counted, and the move it caused, if any."""

    snapshot: Snapshot
    counted: bool
    count: int  # the reported state's counter after this report (kept even when the chart moved on)
    transition: Transition | None = None


def start_count(state: State) -> int:
    """The counter a state starts each visit with (0 for states without a counter)."""
    return state.counter.start if state.counter else 0


def initial(chart: Chart, now: datetime) -> Snapshot:
    """The snapshot of a chart that has just been created or reset."""
    return enter(chart, chart.initial, now)


def enter(chart: Chart, name: str, now: datetime) -> Snapshot:
    """The snapshot right after entering state `name`: its counter back at the start value."""
    state = chart.state(name)
    assert state is not None, name
    return Snapshot(name, start_count(state), now)


def lookup(chart: Chart, name: str) -> State:
    """The state called `name`. Raises UnknownState, so a typo never reads as a closed gate."""
    state = chart.state(name)
    if state is None:
        raise UnknownState(chart.name, name, chart.state_names)
    return state


def current(chart: Chart, snap: Snapshot) -> State:
    """The snapshot's state in this chart. Raises CorruptState when the store names a state the chart lacks."""
    state = chart.state(snap.state)
    if state is None:
        raise CorruptState(
            f"chart {chart.name!r} is stored in state {snap.state!r}, which the chart does not have; "
            f"repair it with `stateservice reset` or set current_state to one of: {', '.join(chart.state_names)}",
            chart=chart.name,
            current_state=snap.state,
        )
    return state


def check(chart: Chart, snap: Snapshot, name: str) -> None:
    """Gate check: return if `name` is current. Raises UnknownState, Halted, NotCurrent or AwaitingApproval."""
    state = lookup(chart, name)
    current(chart, snap)
    refuse_halted(chart, snap)
    if snap.state != name:
        raise NotCurrent(chart.name, name, snap.state)
    if state.func is Func.APPROVAL:
        raise AwaitingApproval(chart.name, name, snap.continuation)


def refuse_halted(chart: Chart, snap: Snapshot) -> None:
    """Raise Halted when the chart is halted: gates, slots and reports stop so that automation stops."""
    if snap.halted is not None:
        at = snap.halted_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if snap.halted_at else None
        raise Halted(chart.name, snap.state, snap.halted, at)


def check_window(chart: Chart, name: str, now: datetime, zone: tzinfo) -> None:
    """Raise OutsideWindow when state `name` has deployment windows or blackouts and `now` is outside them.

    `zone` is the server's; a chart with its own `timezone:` is read in that instead.
    """
    rollout = lookup(chart, name).rollout
    if not rollout.timed:
        return
    zone = chart.zone or zone
    if windows.is_open(rollout.windows, rollout.blackouts, now, zone):
        return
    opens = windows.next_open(rollout.windows, rollout.blackouts, now, zone)
    wait = max(1, math.ceil((opens - now).total_seconds())) if opens is not None else None
    raise OutsideWindow(chart.name, name, opens.strftime("%Y-%m-%dT%H:%M:%SZ") if opens else None, wait)


def hosts_needed(state: State) -> int:
    """How many counted reports move an increment state on (its failure budget's percentages are of this)."""
    assert state.counter is not None and state.target is not None and isinstance(state.target.value, int)
    return state.target.value - state.counter.start


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failure report did: whether it was new in this visit, the visit's failures after it, and the records
    to keep (the failure itself, and the halt it caused when it used up the budget)."""

    recorded: bool
    failures: int
    records: tuple[Transition, ...] = ()
    snapshot: Snapshot | None = None  # the snapshot after it: halted when the budget ran out


def fail(
    chart: Chart, snap: Snapshot, name: str, host: str, now: datetime, *, failed: Set[str], reason: str | None = None
) -> Failure:
    """A host failed `name`: record it once per visit, and halt the chart when the state's budget is used up.

    `failed` holds the hosts whose failure this visit has recorded already. Raises what `report` raises.
    """
    state = _reportable(chart, snap, name)
    if host in failed:
        return Failure(False, len(failed))
    failures = len(failed) + 1
    record = Transition(chart.name, name, name, "failure", now, host, reason=reason)
    if not budget.exhausted(state.rollout.max_failures, hosts_needed(state), failures):
        return Failure(True, failures, (record,))
    why = f"{failures} failed host(s) reached max_failures {state.rollout.max_failures} of state {name!r}"
    halt = Transition(chart.name, name, name, "halt", now, host, reason=why)
    halted = Snapshot(snap.state, snap.count, snap.entered_at, halted=why, halted_at=now)
    return Failure(True, failures, (record, halt), halted)


def _reportable(chart: Chart, snap: Snapshot, name: str) -> State:
    """The current increment state `name`. Raises UnknownState, Halted, NotCurrent or NotReportable."""
    state = lookup(chart, name)
    current(chart, snap)
    refuse_halted(chart, snap)
    if snap.state != name:
        raise NotCurrent(chart.name, name, snap.state)
    if state.func is None:
        raise NotReportable(chart.name, name, "is final")
    if state.func is Func.TIME:
        raise NotReportable(chart.name, name, "moves by the clock")
    if state.func is Func.APPROVAL:
        raise NotReportable(chart.name, name, "waits for an approval (POST /continuations/{id})")
    return state


def report(
    chart: Chart, snap: Snapshot, name: str, now: datetime, *, already_counted: bool = False, host: str | None = None
) -> Report:
    """A host finished `name`: count it and move on when the target count is reached.

    `already_counted` says this host was counted in this visit already (the report then
    changes nothing). Raises UnknownState, Halted, NotCurrent, or NotReportable (final or time states).
    """
    state = _reportable(chart, snap, name)
    if already_counted:
        return Report(snap, counted=False, count=snap.count)
    assert state.target is not None and isinstance(state.target.value, int)
    count = snap.count + 1
    # `>=`, not the original's `==`: a counter an operator set past the target still moves on.
    if count < state.target.value:
        return Report(Snapshot(name, count, snap.entered_at), counted=True, count=count)
    move = Transition(chart.name, name, state.target.name, "put", now, host)
    return Report(enter(chart, state.target.name, now), counted=True, count=count, transition=move)


MAX_CHAIN = 1000  # time moves applied in one go; a long catch-up goes on in the next call


def advance(chart: Chart, snap: Snapshot, now: datetime, limit: int = MAX_CHAIN) -> tuple[Snapshot, list[Transition]]:
    """Apply every time transition due at `now`, in order, as if the service had been running.

    Each move happens at its due time: the next state is entered then (so an `elapsed`
    state counts from its predecessor's due time, not from a late catch-up).
    An approval state whose timeout passes moves on the same way (cause `timeout`): a halted one too,
    since a halt stops hosts, not the clock a person was given.
    """
    moves: list[Transition] = []
    while len(moves) < limit:
        state = current(chart, snap)
        due = _due(state, snap.entered_at)
        if due is None or due > now:
            break
        ahead, cause = _onward(state)
        moves.append(Transition(chart.name, state.name, ahead, cause, now, None, due_at=due))
        snap = enter(chart, ahead, due)
    return snap, moves


def _due(state: State, entered_at: datetime) -> datetime | None:
    if state.func is Func.TIME:
        return timing.due_at(state, entered_at)
    if state.approval is not None and state.approval.timeout is not None:
        return entered_at + state.approval.timeout.after
    return None


def _onward(state: State) -> tuple[str, str]:
    """Where a state that fell due goes, and the cause its history record names."""
    if state.approval is not None and state.approval.timeout is not None:
        return state.approval.timeout.next, "timeout"
    assert state.target is not None
    return state.target.name, "time"


def next_due(chart: Chart, snap: Snapshot) -> datetime | None:
    """When the snapshot's state falls due: a time state, or an approval state's timeout."""
    return _due(current(chart, snap), snap.entered_at)


def resume(
    chart: Chart, snap: Snapshot, continuation: str, given: Mapping[str, Any], now: datetime, actor: str | None = None
) -> tuple[Snapshot, Transition] | None:
    """A person resumes the approval state `snap` waits in with `given`: the next snapshot and its history record,
    or None when no choice matches and there is no default (the continuation stays usable).

    The caller has applied due moves first and checked that `continuation` is the snapshot's own.
    """
    state = current(chart, snap)
    assert state.approval is not None and snap.continuation == continuation
    ahead = approvals.pick(state.approval, given)
    if ahead is None:
        return None
    keys = ", ".join(sorted(given)) or "none"
    move = Transition(chart.name, state.name, ahead, "approval", now, None, actor=actor, reason=f"input keys: {keys}")
    return enter(chart, ahead, now), move


def reset(chart: Chart, snap: Snapshot | None, now: datetime, host: str | None = None) -> tuple[Snapshot, Transition]:
    """Back to the chart's initial state, whatever the snapshot (even one the chart does not know)."""
    move = Transition(chart.name, snap.state if snap else "", chart.initial, "reset", now, host)
    return initial(chart, now), move


def carry_over(chart: Chart, snap: Snapshot) -> Snapshot:
    """The stored snapshot under a changed chart file: kept if its state still exists. Raises StateRemoved."""
    if chart.state(snap.state) is None:
        where = chart.path or chart.name
        raise StateRemoved(
            f"{where}: chart {chart.name!r} is stored in state {snap.state!r}, "
            f"which the changed chart file no longer has; run `stateservice reset {shlex.quote(where)}` "
            "to start it again from its initial state, or restore the state in the file",
            chart=chart.name,
            current_state=snap.state,
        )
    return snap
