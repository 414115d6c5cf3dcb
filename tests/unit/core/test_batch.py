"""Group commit decides a batch exactly as if its reports had been applied one by one."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from stateservice.core import batch, rules
from stateservice.core.chart import Chart, Snapshot
from stateservice.core.parse import parse
from stateservice.errors import NotCurrent, NotReportable, StateServiceError

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)

CYCLE = parse(
    """
name: cycle
current_state: a
states:
  - {name: a, func: increment, current: {key: n, value: 0}, target: {name: b, when: {key: n, value: 3}}}
  - {name: b, func: increment, current: {key: n, value: 1}, target: {name: c, when: {key: n, value: 3}}}
  - {name: c, func: increment, current: {key: n, value: 0}, target: {name: a, when: {key: n, value: 2}}}
""",
    "cycle.yaml",
).unwrap()

LINE = parse(
    """
name: line
current_state: a
states:
  - {name: a, func: increment, current: {key: n, value: 0}, target: {name: b, when: {key: n, value: 2}}}
  - {name: b, func: increment, current: {key: n, value: 0}, target: {name: done, when: {key: n, value: 2}}}
  - {name: done}
""",
    "line.yaml",
).unwrap()


def serial(
    chart: Chart, snap: Snapshot, entries: list[batch.Entry], counted: set[str], before: dict[str, set[str]]
) -> tuple[Snapshot, list[object], dict[str, set[str]]]:
    """The reference: one report at a time, host sets kept the way the store keeps them.

    Each state's set holds its most recent visit: entering a state empties it, leaving keeps it.
    A host in the set of the state it names has been counted there: told so (200, not counted).
    """
    sets = {**{state: set(hosts) for state, hosts in before.items()}, snap.state: set(counted)}
    answers: list[object] = []
    for entry in entries:
        if entry.host is not None and entry.host in sets.get(entry.state, set()):
            answers.append((False, snap.count, None))
            continue
        try:
            result = rules.report(chart, snap, entry.state, NOW, host=entry.host)
        except StateServiceError as exc:
            answers.append((type(exc).__name__, exc.fields.get("current_state")))
            continue
        answers.append((result.counted, result.count, result.transition))
        if result.counted and entry.host is not None:
            sets[entry.state].add(entry.host)
        if result.transition is not None:
            sets[result.transition.to_state] = set()
        snap = result.snapshot
    return snap, answers, sets


def answers_of(decision: batch.Decision) -> list[object]:
    out: list[object] = []
    for outcome in decision.outcomes:
        if isinstance(outcome, StateServiceError):
            out.append((type(outcome).__name__, outcome.fields.get("current_state")))
        else:
            out.append((outcome.counted, outcome.count, outcome.transition))
    return out


def test_the_report_that_reaches_the_target_moves_and_later_ones_are_refused() -> None:
    snap = rules.initial(LINE, NOW)
    entries = [batch.Entry("a", "h1"), batch.Entry("a", "h2"), batch.Entry("a", "h3"), batch.Entry("b", "h1")]
    decision = batch.decide(LINE, snap, entries, NOW, set())
    first, second, third, fourth = decision.outcomes
    assert isinstance(first, rules.Report) and first.transition is None
    assert isinstance(second, rules.Report) and second.transition is not None
    assert isinstance(third, NotCurrent) and third.fields["current_state"] == "b"
    assert isinstance(fourth, rules.Report) and fourth.counted  # a new visit: h1 counts again in b
    assert decision.snapshot.state == "b" and decision.snapshot.count == 1
    assert decision.new_hosts == {"h1"}
    assert decision.counters == {"a": 2, "b": 1}


def test_duplicates_of_one_host_count_once_inside_a_batch() -> None:
    snap = rules.initial(CYCLE, NOW)
    decision = batch.decide(CYCLE, snap, [batch.Entry("a", "web1")] * 5, NOW, set())
    assert [o.counted for o in decision.outcomes if isinstance(o, rules.Report)] == [True, False, False, False, False]
    assert decision.snapshot.count == 1


def test_hosts_already_counted_in_redis_are_not_counted_again() -> None:
    snap = rules.initial(CYCLE, NOW)
    decision = batch.decide(CYCLE, snap, [batch.Entry("a", "web1"), batch.Entry("a", "web2")], NOW, {"web1"})
    assert [o.counted for o in decision.outcomes if isinstance(o, rules.Report)] == [False, True]
    assert decision.new_hosts == {"web2"}


def test_a_final_state_refuses_every_report_in_the_batch() -> None:
    snap = Snapshot("done", 0, NOW)
    decision = batch.decide(LINE, snap, [batch.Entry("done"), batch.Entry("done", "x")], NOW, set())
    assert all(isinstance(o, NotReportable) for o in decision.outcomes)
    assert not decision.changed


entries_strategy = st.lists(
    st.builds(
        batch.Entry,
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.none(), st.sampled_from(["h1", "h2", "h3", "h4"])),
    ),
    max_size=40,
)


hosts_strategy = st.sets(st.sampled_from(["h1", "h2", "h3", "h4"]))


@settings(max_examples=300)
@given(
    start=st.sampled_from(["a", "b", "c"]),
    count=st.integers(0, 2),
    entries=entries_strategy,
    counted=hosts_strategy,
    before=st.fixed_dictionaries({}, optional={"a": hosts_strategy, "b": hosts_strategy, "c": hosts_strategy}),
)
def test_a_batch_decides_exactly_as_serial_reports_would(
    start: str, count: int, entries: list[batch.Entry], counted: set[str], before: dict[str, set[str]]
) -> None:
    before.pop(start, None)  # the current state's set is `counted`
    snap = Snapshot(start, count, NOW)
    decision = batch.decide(CYCLE, snap, entries, NOW, counted, before)
    final, answers, sets = serial(CYCLE, snap, entries, counted, before)
    assert answers_of(decision) == answers
    assert decision.snapshot == final
    # what the store writes reproduces the serial end state: the final visit's hosts ...
    written_hosts = decision.new_hosts if decision.transitions else counted | decision.new_hosts
    assert written_hosts == sets[final.state]
    # ... the visits that ended in the batch (added to what their sets held) ...
    stored = {**before, start: counted}
    for state, hosts in decision.finished.items():
        entered = any(t.to_state == state for t in decision.transitions)  # the store emptied its set then
        assert (set() if entered else stored.get(state, set())) | hosts == sets[state]
        assert state != final.state
    # ... and the final state's counter
    if decision.changed:
        assert decision.counters.get(final.state, final.count) == final.count
    assert len(decision.outcomes) == len(entries)
