"""Group commit: many reports to one chart decided together, exactly as if they had been serialised.

Pure. `store/charts.py` collects the reports that arrive while a chart's previous
transaction is in flight and writes their combined effect in one transaction; this module
says what that effect is and what each caller is answered: the report that reaches the
target is the one that moves the chart, those after it that named the old state are
refused with NotCurrent, and a host is counted at most once per visit even inside a batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import datetime

from stateservice.core import rules
from stateservice.core.chart import Chart, Snapshot, Transition
from stateservice.errors import StateServiceError


@dataclass(frozen=True, slots=True)
class Entry:
    """One report in a batch: the state it names, for idempotent reports its host, and who sent it (audit)."""

    state: str
    host: str | None = None
    actor: str | None = None
    remote: str | None = None


@dataclass
class Decision:
    """What a batch does: the final snapshot, each entry's answer, and what to write."""

    snapshot: Snapshot
    outcomes: list[rules.Report | StateServiceError] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)  # state -> its counter after its last count
    new_hosts: set[str] = field(default_factory=set)  # to add to the final state's host set
    finished: dict[str, set[str]] = field(default_factory=dict)  # visits that ended here: state -> hosts to keep

    @property
    def changed(self) -> bool:
        return bool(self.counters or self.transitions)


def decide(
    chart: Chart,
    snap: Snapshot,
    entries: Sequence[Entry],
    now: datetime,
    counted: Set[str],
    before: Mapping[str, Set[str]] | None = None,
) -> Decision:
    """Apply `entries` in order to `snap`. `counted` holds the hosts already counted in `snap`'s visit.

    `before` holds, for other states, the hosts counted in their most recent visit: a host
    repeating such a report (a retry whose answer was lost while the chart moved on) is told
    it was counted, not refused, and so is a repeat within the current visit on a halted chart.
    """
    decision = Decision(snap)
    visit: set[str] = set(counted)
    earlier: dict[str, Set[str]] = dict(before or {})
    for entry in entries:
        done = visit if entry.state == snap.state else earlier.get(entry.state, ())
        if entry.host is not None and entry.host in done:
            decision.outcomes.append(rules.Report(snap, counted=False, count=snap.count))
            continue
        try:
            result = rules.report(chart, snap, entry.state, now, host=entry.host)
        except StateServiceError as exc:
            decision.outcomes.append(exc)
            continue
        decision.outcomes.append(result)
        if not result.counted:
            continue
        decision.counters[entry.state] = result.count
        if entry.host is not None:
            visit.add(entry.host)
        if result.transition is not None:
            decision.transitions.append(replace(result.transition, actor=entry.actor, remote=entry.remote))
            decision.counters[result.snapshot.state] = result.snapshot.count  # entering resets it
            earlier[entry.state] = decision.finished[entry.state] = visit  # now that state's most recent visit
            visit = set()  # a new visit: nobody is counted in it yet
        snap = result.snapshot
    decision.snapshot = snap
    decision.new_hosts = visit if decision.transitions else visit - set(counted)
    decision.finished.pop(snap.state, None)  # re-entered within the batch: its current visit is new_hosts
    return decision
