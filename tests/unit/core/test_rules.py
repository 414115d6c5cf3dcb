"""rules.py: examples of every decision, then hypothesis properties over random charts and reports."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stateservice.core import rules
from stateservice.core.chart import HOST_NAME, Chart, Counter, Func, Snapshot, State, Target, Transition
from stateservice.core.parse import Parsed, parse
from stateservice.errors import (
    CorruptState,
    NotCurrent,
    NotReportable,
    StartupError,
    StateRemoved,
    StateServiceError,
    UnknownState,
)
from tests.support import charts

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

load = partial(charts.load, path="release.yaml")  # a chart without `name:` is called "release"


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


RELEASE = load(
    """
    current_state: build
    states:
      - name: build
        func: increment
        current: {key: hosts, value: 0}
        target: {name: canary, when: {key: hosts, value: 3}}
      - name: canary
        func: increment
        current: {key: hosts, value: 2}
        target: {name: wait, when: {key: hosts, value: 4}}
      - name: wait
        func: time
        target: {name: done, when: {key: clock, value: 3000-01-01T12:00:00Z}}
      - name: done
    """
)

PINGPONG = load(
    """
    current_state: ping
    states:
      - name: ping
        func: increment
        current: {key: n, value: 0}
        target: {name: pong, when: {key: n, value: 2}}
      - name: pong
        func: increment
        current: {key: n, value: 5}
        target: {name: ping, when: {key: n, value: 6}}
    """,
    path="pingpong.yaml",
)


# -- initial, check --------------------------------------------------------------------------


def test_initial_is_the_initial_state_at_its_start_value() -> None:
    assert rules.initial(RELEASE, T0) == Snapshot("build", 0, T0)
    assert rules.initial(PINGPONG, at(5)) == Snapshot("ping", 0, at(5))


def test_initial_of_a_state_starting_above_zero_and_of_a_final_state() -> None:
    starts_at_7 = load(
        """
        current_state: a
        states:
          - name: a
            func: increment
            current: {key: n, value: 7}
            target: {name: a, when: {key: n, value: 9}}
        """
    )
    final = load("current_state: z\nstates:\n  - name: z\n")

    assert rules.initial(starts_at_7, T0) == Snapshot("a", 7, T0)
    assert rules.initial(final, T0) == Snapshot("z", 0, T0)
    assert rules.start_count(RELEASE.states[1]) == 2
    assert rules.start_count(RELEASE.states[2]) == 0  # time states have no counter


def test_check_passes_for_the_current_state() -> None:
    assert rules.check(RELEASE, Snapshot("build", 0, T0), "build") is None
    assert rules.check(RELEASE, Snapshot("done", 0, T0), "done") is None
    assert rules.check(RELEASE, Snapshot("wait", 0, T0), "wait") is None


def test_check_refuses_another_state_and_names_the_current_one() -> None:
    with pytest.raises(NotCurrent) as caught:
        rules.check(RELEASE, Snapshot("canary", 2, T0), "build")

    err = caught.value
    assert (err.status, err.code) == (406, "not_current")
    assert err.fields == {"chart": "release", "state": "build", "current_state": "canary"}
    assert str(err) == "state 'build' of chart 'release' is not current; the current state is 'canary'"


def test_check_reports_a_typo_as_unknown_not_as_a_closed_gate() -> None:
    with pytest.raises(UnknownState) as caught:
        rules.check(RELEASE, Snapshot("build", 0, T0), "biuld")

    err = caught.value
    assert (err.status, err.code) == (404, "unknown_state")
    assert err.fields == {"chart": "release", "state": "biuld", "states": ["build", "canary", "wait", "done"]}
    assert "has no state 'biuld'" in str(err)


def test_check_on_a_snapshot_naming_a_state_the_chart_lacks_is_corrupt() -> None:
    with pytest.raises(CorruptState) as caught:
        rules.check(RELEASE, Snapshot("ghost", 0, T0), "build")

    err = caught.value
    assert (err.status, err.code) == (500, "corrupt_state")
    assert err.fields == {"chart": "release", "current_state": "ghost"}
    assert "'ghost'" in str(err) and "stateservice reset" in str(err)


def test_check_names_the_unknown_state_before_looking_at_a_corrupt_snapshot() -> None:
    with pytest.raises(UnknownState):
        rules.check(RELEASE, Snapshot("ghost", 0, T0), "nope")


# -- report ----------------------------------------------------------------------------------


def test_report_counts_until_the_threshold_then_moves() -> None:
    snap = rules.initial(RELEASE, T0)

    first = rules.report(RELEASE, snap, "build", at(1), host="web-1")
    assert first == rules.Report(Snapshot("build", 1, T0), counted=True, count=1)
    second = rules.report(RELEASE, first.snapshot, "build", at(2), host="web-2")
    assert second == rules.Report(Snapshot("build", 2, T0), counted=True, count=2)
    third = rules.report(RELEASE, second.snapshot, "build", at(3), host="web-3")

    assert third.counted
    assert third.count == 3  # the reported state's counter, kept although the chart moved on
    assert third.snapshot == Snapshot("canary", 2, at(3))  # canary's counter starts at 2
    assert third.transition == Transition("release", "build", "canary", "put", at(3), "web-3")


def test_the_transition_carries_from_to_cause_host_and_time() -> None:
    snap = Snapshot("canary", 3, at(10))

    move = rules.report(RELEASE, snap, "canary", at(11), host="db-7.example.com").transition

    assert move is not None
    assert move.chart == "release"
    assert (move.from_state, move.to_state) == ("canary", "wait")
    assert move.cause == "put"
    assert move.host == "db-7.example.com"
    assert move.at == at(11)


def test_a_report_without_a_host_gives_a_transition_without_a_host() -> None:
    move = rules.report(RELEASE, Snapshot("canary", 3, T0), "canary", at(1)).transition

    assert move is not None and move.host is None


def test_a_counter_already_past_the_target_moves_on() -> None:
    r = rules.report(RELEASE, Snapshot("build", 9, T0), "build", at(1), host="h")

    assert r.count == 10
    assert r.snapshot == Snapshot("canary", 2, at(1))


def test_the_counter_restarts_on_entering_each_state_round_a_cycle_twice() -> None:
    snap = rules.initial(PINGPONG, T0)
    seen: list[tuple[str, int]] = []
    moves: list[Transition] = []
    for i in range(1, 7):  # ping needs 2, pong needs 1: two full laps in six reports
        r = rules.report(PINGPONG, snap, snap.state, at(i), host=f"h{i}")
        seen.append((r.snapshot.state, r.snapshot.count))
        if r.transition:
            moves.append(r.transition)
        snap = r.snapshot

    assert seen == [("ping", 1), ("pong", 5), ("ping", 0), ("ping", 1), ("pong", 5), ("ping", 0)]
    assert [(m.from_state, m.to_state, m.host, m.at) for m in moves] == [
        ("ping", "pong", "h2", at(2)),
        ("pong", "ping", "h3", at(3)),
        ("ping", "pong", "h5", at(5)),
        ("pong", "ping", "h6", at(6)),
    ]
    assert snap == Snapshot("ping", 0, at(6))


def test_a_self_loop_restarts_its_own_counter() -> None:
    loop = load(
        """
        current_state: loop
        states:
          - name: loop
            func: increment
            current: {key: n, value: 1}
            target: {name: loop, when: {key: n, value: 3}}
        """
    )
    snap = rules.report(loop, Snapshot("loop", 2, T0), "loop", at(1), host="h")

    assert snap.snapshot == Snapshot("loop", 1, at(1))
    assert snap.transition == Transition("release", "loop", "loop", "put", at(1), "h")


@pytest.mark.parametrize("count", [0, 1, 2])
def test_already_counted_changes_nothing(count: int) -> None:
    snap = Snapshot("build", count, T0)

    r = rules.report(RELEASE, snap, "build", at(1), already_counted=True, host="web-1")

    assert r == rules.Report(snap, counted=False, count=count, transition=None)


@pytest.mark.parametrize(("state", "why"), [("done", "is final"), ("wait", "moves by the clock")])
@pytest.mark.parametrize("already", [False, True])
def test_final_and_time_states_are_not_reportable(state: str, why: str, already: bool) -> None:
    with pytest.raises(NotReportable) as caught:
        rules.report(RELEASE, Snapshot(state, 0, T0), state, at(1), already_counted=already, host="h")

    err = caught.value
    assert (err.status, err.code) == (409, "not_reportable")
    assert err.fields == {"chart": "release", "state": state, "current_state": state}
    assert str(err) == f"state {state!r} of chart 'release' {why}; reports cannot move it"


def test_report_on_a_state_that_is_not_current() -> None:
    with pytest.raises(NotCurrent) as caught:
        rules.report(RELEASE, Snapshot("canary", 2, T0), "build", at(1), host="h")

    assert caught.value.fields["current_state"] == "canary"


def test_report_on_a_final_state_that_is_not_current_is_not_current() -> None:
    with pytest.raises(NotCurrent):
        rules.report(RELEASE, Snapshot("build", 0, T0), "done", at(1))


def test_report_of_an_unknown_state() -> None:
    with pytest.raises(UnknownState):
        rules.report(RELEASE, Snapshot("build", 0, T0), "Build", at(1))


def test_report_on_a_corrupt_snapshot() -> None:
    with pytest.raises(CorruptState):
        rules.report(RELEASE, Snapshot("ghost", 0, T0), "build", at(1))


# -- reset, carry_over -----------------------------------------------------------------------


@pytest.mark.parametrize("snap", [Snapshot("done", 0, T0), Snapshot("canary", 3, T0), Snapshot("ghost", 9, T0)])
def test_reset_goes_back_to_the_initial_state_from_anywhere(snap: Snapshot) -> None:
    new, move = rules.reset(RELEASE, snap, at(9), host="ops")

    assert new == Snapshot("build", 0, at(9))
    assert move == Transition("release", snap.state, "build", "reset", at(9), "ops")


def test_reset_of_a_chart_never_stored() -> None:
    new, move = rules.reset(RELEASE, None, at(1))

    assert new == rules.initial(RELEASE, at(1))
    assert move == Transition("release", "", "build", "reset", at(1), None)


def test_carry_over_keeps_a_snapshot_whose_state_still_exists() -> None:
    snap = Snapshot("canary", 3, at(4))
    changed = load(
        """
        current_state: canary
        states:
          - name: canary
            func: increment
            current: {key: hosts, value: 0}
            target: {name: done, when: {key: hosts, value: 10}}
          - name: done
        """
    )

    assert rules.carry_over(changed, snap) is snap


def test_carry_over_refuses_a_state_the_new_file_removed() -> None:
    changed = load("current_state: done\nstates:\n  - name: done\n", path="charts/release.yaml")

    with pytest.raises(StateRemoved) as caught:
        rules.carry_over(changed, Snapshot("canary", 3, T0))

    err = caught.value
    assert isinstance(err, StartupError)
    assert err.code == "state_removed"
    assert err.fields == {"chart": "release", "current_state": "canary"}
    assert "`stateservice reset charts/release.yaml`" in str(err)
    assert str(err).startswith("charts/release.yaml: chart 'release' is stored in state 'canary'")


# -- hypothesis: random charts and random reports ----------------------------------------------

LOWER, DIGITS = "abcdefghijklmnopqrstuvwxyz", "0123456789"
state_names = st.builds(operator.add, st.sampled_from(LOWER), st.text(LOWER + DIGITS + "_.-", max_size=7))
host_names = st.builds(operator.add, st.sampled_from(LOWER + DIGITS), st.text(LOWER + DIGITS + ".:@-", max_size=20))


@st.composite
def chart_docs(draw: st.DrawFn, cyclic: bool | None = None) -> dict[str, Any]:
    """A valid chart document: a chain of increment states, ending in a final state or looping back."""
    n = draw(st.integers(1, 6))
    names = draw(st.lists(state_names, min_size=n + 1, max_size=n + 1, unique=True))
    if cyclic is None:
        cyclic = draw(st.booleans())
    last_target = names[draw(st.integers(0, n - 1))] if cyclic else names[n]
    states: list[dict[str, Any]] = []
    for i in range(n):
        key = draw(st.sampled_from(["hosts", "count", "n"]))
        start = draw(st.integers(-3, 5))
        need = draw(st.integers(1, 4))
        target = names[i + 1] if i < n - 1 else last_target
        states.append(
            {
                "name": names[i],
                "func": "increment",
                "current": {"key": key, "value": start},
                "target": {"name": target, "when": {"key": key, "value": start + need}},
            }
        )
    if not cyclic:
        states.append({"name": names[n]})
    return {"current_state": names[0], "states": states}


def to_chart(doc: dict[str, Any]) -> Chart:
    """The chart a document describes, built directly (no YAML), for speed."""
    states = []
    for s in doc["states"]:
        if "func" not in s:
            states.append(State(s["name"], None))
            continue
        cur, tgt = s["current"], s["target"]
        states.append(
            State(
                s["name"],
                Func.INCREMENT,
                Counter(cur["key"], cur["value"]),
                Target(tgt["name"], tgt["when"]["key"], tgt["when"]["value"]),
            )
        )
    return Chart(name="gen", initial=doc["current_state"], states=tuple(states))


@dataclass(frozen=True)
class Action:
    own: bool  # report the current state (else the state at `other`)
    other: int
    host: str
    already_counted: bool


@st.composite
def action_lists(draw: st.DrawFn, max_size: int = 80) -> list[Action]:
    """Reports from a few hosts: mostly naming the current state, a quarter of them already counted."""
    hosts = draw(st.lists(host_names, min_size=1, max_size=5, unique=True))
    return draw(
        st.lists(
            st.builds(
                Action,
                own=st.integers(0, 9).map(lambda x: x > 0),
                other=st.integers(0, 10),
                host=st.sampled_from(hosts),
                already_counted=st.integers(0, 3).map(lambda x: x == 0),
            ),
            min_size=min(10, max_size),
            max_size=max_size,
        )
    )


@dataclass(frozen=True)
class Step:
    before: Snapshot
    name: str
    action: Action
    now: datetime
    result: rules.Report | None
    error: StateServiceError | None


def run(chart: Chart, actions: Sequence[Action], snap: Snapshot | None = None) -> tuple[list[Step], Snapshot]:
    """Apply the reports in order; refusals leave the snapshot as it was."""
    snap = snap or rules.initial(chart, T0)
    steps: list[Step] = []
    for i, action in enumerate(actions, start=1):
        name = snap.state if action.own else chart.states[action.other % len(chart.states)].name
        now = at(i)
        try:
            r = rules.report(chart, snap, name, now, already_counted=action.already_counted, host=action.host)
        except (NotCurrent, NotReportable) as exc:
            steps.append(Step(snap, name, action, now, None, exc))
            continue
        steps.append(Step(snap, name, action, now, r, None))
        snap = r.snapshot
    return steps, snap


def state(chart: Chart, name: str) -> State:
    s = chart.state(name)
    assert s is not None
    return s


def target_count(chart: Chart, name: str) -> int:
    t = state(chart, name).target
    assert t is not None and isinstance(t.value, int)
    return t.value


def need(chart: Chart, name: str) -> int:
    return target_count(chart, name) - rules.start_count(state(chart, name))


@given(chart_docs())
def test_generated_charts_are_charts_parse_accepts(doc: dict[str, Any]) -> None:
    result = parse(yaml.safe_dump(doc, sort_keys=False), "gen.yaml")

    assert result.problems == []
    parsed = result.unwrap()
    direct = to_chart(doc)
    assert parsed.initial == direct.initial
    assert [(s.name, s.func, s.counter, s.target) for s in parsed.states] == [
        (s.name, s.func, s.counter, s.target) for s in direct.states
    ]


@given(chart_docs().map(to_chart), action_lists())
def test_the_count_never_reaches_the_target_without_a_move(chart: Chart, actions: list[Action]) -> None:
    steps, _ = run(chart, actions)

    for step in steps:
        if step.result is None:
            continue
        r, reported = step.result, step.name
        assert rules.start_count(state(chart, reported)) <= r.count <= target_count(chart, reported)
        assert (r.transition is not None) == (r.count >= target_count(chart, reported))
        now_in = state(chart, r.snapshot.state)
        if not now_in.final:
            assert rules.start_count(now_in) <= r.snapshot.count < target_count(chart, now_in.name)


@given(chart_docs().map(to_chart), action_lists())
def test_the_chart_moves_only_along_targets(chart: Chart, actions: list[Action]) -> None:
    steps, _ = run(chart, actions)

    for step in steps:
        if step.result is None:
            continue
        r, move = step.result, step.result.transition
        if move is None:
            assert r.snapshot.state == step.before.state
            assert r.snapshot.entered_at == step.before.entered_at
            continue
        source = state(chart, step.before.state)
        assert source.target is not None
        assert move == Transition("gen", step.before.state, source.target.name, "put", step.now, step.action.host)
        assert step.name == step.before.state
        assert r.snapshot == Snapshot(move.to_state, rules.start_count(state(chart, move.to_state)), step.now)


@given(chart_docs().map(to_chart), action_lists())
def test_one_transition_per_threshold_crossing(chart: Chart, actions: list[Action]) -> None:
    steps, last = run(chart, actions)

    # reference model: count reports per visit; a visit ends after exactly `need` counted reports
    where, in_visit, crossings = chart.initial, 0, 0
    for step in steps:
        s = state(chart, where)
        if step.name != where:
            assert isinstance(step.error, NotCurrent)
            assert step.error.fields["current_state"] == where
        elif s.final:
            assert isinstance(step.error, NotReportable)
        elif step.action.already_counted:
            assert step.result == rules.Report(step.before, counted=False, count=step.before.count)
        else:
            assert step.result is not None and step.result.counted
            in_visit += 1
            if in_visit == need(chart, where):
                crossings += 1
                assert s.target is not None
                where, in_visit = s.target.name, 0
            assert step.result.snapshot.state == where
    moves = [s.result.transition for s in steps if s.result and s.result.transition]
    assert len(moves) == crossings
    assert last.state == where
    assert last.count == rules.start_count(state(chart, where)) + in_visit


@given(chart_docs(cyclic=False).map(to_chart), action_lists(max_size=30))
def test_the_final_state_absorbs(chart: Chart, actions: list[Action]) -> None:
    snap = rules.initial(chart, T0)
    for i in range(1, 100):
        if state(chart, snap.state).final:
            break
        snap = rules.report(chart, snap, snap.state, at(i), host="driver").snapshot
    assert state(chart, snap.state).final
    final = snap

    steps, last = run(chart, actions, final)

    assert last == final
    for step in steps:
        assert step.result is None
        assert step.before == final
        if step.name == final.state:
            assert isinstance(step.error, NotReportable)
        else:
            assert isinstance(step.error, NotCurrent)
        rules.check(chart, last, final.state)  # the last gate stays open


@given(chart_docs(cyclic=False).map(to_chart), action_lists(max_size=120))
def test_once_final_every_later_report_is_refused(chart: Chart, actions: list[Action]) -> None:
    steps, last = run(chart, actions)

    finals = [i for i, s in enumerate(steps) if state(chart, s.before.state).final]
    if finals:
        for step in steps[finals[0] :]:
            assert step.before == last
            assert step.result is None
            assert isinstance(step.error, NotReportable | NotCurrent)


@given(chart_docs().map(to_chart), action_lists())
def test_counted_reports_equal_the_sum_of_counts(chart: Chart, actions: list[Action]) -> None:
    steps, last = run(chart, actions)

    counted = 0
    for step in steps:
        if step.result is not None:
            assert step.result.counted is not step.action.already_counted
            counted += step.result.counted
    completed = sum(need(chart, s.result.transition.from_state) for s in steps if s.result and s.result.transition)
    current = last.count - rules.start_count(state(chart, last.state))
    assert counted == completed + current


@given(host_names)
def test_generated_host_names_are_host_names(host: str) -> None:
    assert HOST_NAME.fullmatch(host)


# -- hypothesis: parse never crashes ----------------------------------------------------------

REAL_KEYS = ["name", "current_state", "states", "func", "current", "target", "when", "key", "value"]
NEAR_KEYS = ["nme", "Name", "current-state", "currentstate", "curent_state", "state", "States", "fnuc", "funct"]
NEAR_KEYS += ["curent", "targt", "targets", "wen", "When", "ky", "keys", "vaule", "val", "clock"]
WORDS = ["increment", "time", "clock", "incremnt", "on", "yes", "no", "null", "~", "0x10", "1_000", ""]
WORDS += ["3000-01-01T12:00:00", "3000-01-01T12:00:00Z", "3000-01-01T12:00:00+02:00", "3000-13-01T00:00:00"]
WORDS += ["elapsed", "90s", "10m", "1h30m", "PT10M", "P1DT2H", "0s", "-5m", "PT", "P", "soon", "999999999d"]
WORDS += ["2026-03-29T02:30:00", "2026-10-25T02:30:00", "0001-01-01T00:00:00+01:00", "99999999999d"]

keys = st.sampled_from(REAL_KEYS + NEAR_KEYS) | st.text(max_size=10)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.integers()
    | st.floats()
    | st.sampled_from(WORDS)
    | st.text(max_size=12)
    | st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=2))]))
)
anything = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=20
)
names_or_anything = st.sampled_from(["a", "b", "c", "on"]) | anything


def mostly(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a well-formed value, sometimes anything at all."""
    return st.one_of(value, value, value, anything)


counters = st.fixed_dictionaries(
    {}, optional={"key": mostly(st.sampled_from(["n", "m"])), "value": mostly(st.integers(-3, 5)), "vaule": anything}
)
targets = st.fixed_dictionaries(
    {},
    optional={
        "name": mostly(names_or_anything),
        "when": mostly(
            st.fixed_dictionaries(
                {},
                optional={
                    "key": mostly(st.sampled_from(["n", "m", "clock", "elapsed"])),
                    "value": mostly(st.integers(-3, 8) | st.sampled_from(WORDS)),
                },
            )
        ),
    },
)
state_like = st.fixed_dictionaries(
    {},
    optional={
        "name": mostly(names_or_anything),
        "func": mostly(st.sampled_from(["increment", "time", "incremnt", "final"])),
        "current": mostly(counters),
        "target": mostly(targets),
        "fnuc": anything,
    },
)
chart_like = st.fixed_dictionaries(
    {},
    optional={
        "name": mostly(st.sampled_from(["x", "my chart", "{x}"]) | st.text(max_size=70)),
        "current_state": mostly(names_or_anything),
        "states": mostly(st.lists(mostly(state_like), max_size=6)),
        "curent_state": anything,
    },
)


@st.composite
def yamlish(draw: st.DrawFn) -> str:
    """YAML text of a chart-like or arbitrary document, sometimes with random text spliced in."""
    doc = draw(st.one_of(chart_like, chart_like, chart_docs(), anything))
    text = yaml.safe_dump(
        doc, sort_keys=False, default_flow_style=draw(st.sampled_from([False, True, None])), allow_unicode=True
    )
    if draw(st.integers(0, 3)) == 0:
        at_ = draw(st.integers(0, len(text)))
        text = text[:at_] + draw(st.text(max_size=5)) + text[at_:]
    return text


def check_parsed(text: str, zone: tzinfo = UTC) -> None:
    result = parse(text, "x.yaml", zone=zone)

    assert isinstance(result, Parsed)
    assert result.path == "x.yaml"
    last_line = len(text.splitlines()) + 1
    for problem in result.problems:
        assert problem.path == "x.yaml"
        assert 1 <= problem.line <= last_line, problem
        assert str(problem).startswith(f"x.yaml:{problem.line}: ")
    assert [p.line for p in result.problems] == sorted(p.line for p in result.problems)
    if result.errors:
        assert result.chart is None
    else:
        assert result.chart is not None
        assert result.chart.digest == hashlib.sha256(text.encode()).hexdigest()
        snap = rules.initial(result.chart, T0)  # a chart that parses can be driven
        rules.next_due(result.chart, snap)
        rules.advance(result.chart, snap, T0 + timedelta(days=400), limit=20)


@settings(deadline=None)
@given(st.text())
@example("")
@example("current_state: a\nstates:\n  - name: a\n")
@example("{[")
def test_parse_never_crashes_on_text(text: str) -> None:
    check_parsed(text)


TIME_STATE = (
    "current_state: a\nstates:\n"
    "  - {{name: a, func: time, target: {{name: b, when: {{key: {}, value: '{}'}}}}}}\n"
    "  - name: b\n"
)


@pytest.mark.parametrize(
    "text",
    [
        TIME_STATE.format("elapsed", "99999999999d"),
        TIME_STATE.format("elapsed", "999999999d"),
        TIME_STATE.format("clock", "0001-01-01T00:00:00+01:00"),
        TIME_STATE.format("clock", "9999-12-31T23:59:59-01:00"),
    ],
)
def test_parse_never_crashes_on_extreme_times(text: str) -> None:
    check_parsed(text)


@settings(deadline=None)
@given(yamlish(), st.sampled_from([UTC, ZoneInfo("Europe/Berlin"), timezone(timedelta(hours=-3))]))
@example('current_state: "\\U99999999"\n', UTC)  # PyYAML's scanner: chr() out of range
@example('current_state: "\\UFFFFFFFF"\n', UTC)  # PyYAML's scanner: OverflowError
def test_parse_never_crashes_on_yamlish_documents(text: str, zone: tzinfo) -> None:
    check_parsed(text, zone)
