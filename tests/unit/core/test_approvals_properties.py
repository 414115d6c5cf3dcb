"""Hypothesis properties of approval states across approvals.py, rules.py and parse.py: a resume applies exactly one
choice, a continuation resumes at most once whatever the interleaving, `shadowed` is sound (and exact on the input a
choice names), and generated charts parse exactly when `problems` finds nothing.

test_approvals.py has the properties of `pick` alone (first match, else the default) and of a shadowed choice never
being the first match; these build on it rather than repeat it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from stateservice.core import rules
from stateservice.core.approvals import Approval, Choice, Timeout, pick, problems, same, shadowed
from stateservice.core.chart import Chart, Func, Snapshot, State
from stateservice.core.parse import parse

T0 = datetime(2030, 1, 1, 12, tzinfo=UTC)
FINALS = ["done", "rollback", "hold"]
FIELDS = st.sampled_from(["approved", "ticket", "by", "null", "1"])
# every JSON scalar, with numbers that are equal across int and float (1 and 1.0) and text that looks like others
VALUES = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(-2, 2),
    st.sampled_from([1.0, 0.0, -2.0, 0.5, 1e16, float("inf")]),
    st.sampled_from(["yes", "no", "", "1", "true", "null", "T-1", "2030-01-01"]),
)
WHEN = st.dictionaries(FIELDS, VALUES, min_size=1, max_size=3).map(lambda d: tuple(d.items()))
INPUTS = st.dictionaries(FIELDS, VALUES, max_size=4)


def choices_to(states: list[str], *, min_size: int = 0) -> st.SearchStrategy[tuple[Choice, ...]]:
    return st.lists(st.builds(Choice, WHEN, st.sampled_from(states)), min_size=min_size, max_size=5).map(tuple)


def approvals_to(states: list[str]) -> st.SearchStrategy[Approval]:
    """Approvals whose next states are among `states`, often with shadowed choices or neither default nor timeout."""
    timeouts = st.builds(Timeout, st.integers(0, 10**6).map(lambda s: timedelta(seconds=s)), st.sampled_from(states))
    return st.builds(
        Approval,
        choices_to(states),
        st.none() | st.sampled_from(states),
        st.none() | timeouts,
        st.none() | st.just("https://hooks.example.com/approve"),
    )


def first_match(choices: tuple[Choice, ...], given_input: dict[str, Any]) -> int | None:
    return next((i for i, c in enumerate(choices) if c.matches(given_input)), None)


def typed(approval: Approval) -> list[Any]:
    """`approval`'s when values with their types: Choice's == would take True for 1 and 1.0 for 1."""
    return [[(f, type(v), v) for f, v in c.when] for c in approval.choices]


# -- JSON equality -----------------------------------------------------------------------------


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {int: "number", float: "number", str: "string", type(None): "null"}[type(value)]


@given(VALUES, VALUES)
@example(1, "1")
@example(True, 1)
@example(0, False)
@example(1, 1.0)
@example(None, "null")
@example(True, "true")
@example(1e16, 10**16)
def test_same_is_json_equality_of_scalars_and_survives_a_json_round_trip(a: Any, b: Any) -> None:
    # a resume's input arrives as JSON: "1" is not 1, 1 is not true, 1 is 1.0
    assert same(a, b) == (kind(a) == kind(b) and a == b)
    assert same(json.loads(json.dumps(a)), b) == same(a, b) == same(b, a)


# -- resume applies exactly one choice -------------------------------------------------------


def single(approval: Approval) -> Chart:
    """A chart waiting in approval state `ask` whose choices, default and timeout lead to final states."""
    return Chart("c", "ask", (State("ask", Func.APPROVAL, approval=approval), *(State(s, None) for s in FINALS)))


@given(approvals_to(FINALS), INPUTS)
def test_a_resume_applies_exactly_one_choice_the_one_pick_names(
    approval: Approval, given_input: dict[str, Any]
) -> None:
    chart = single(approval)
    result = rules.resume(chart, Snapshot("ask", 0, T0, continuation="c"), "c", given_input, T0, "alice")

    if pick(approval, given_input) is None:
        assert result is None
        return
    assert result is not None
    snap, move = result
    assert move.to_state == pick(approval, given_input) == snap.state
    assert move.to_state in approval.targets()
    assert (move.from_state, move.cause, move.actor) == ("ask", "approval", "alice")
    assert snap.continuation is None and snap.entered_at == T0
    first = first_match(approval.choices, given_input)
    assert move.to_state == (approval.choices[first].next if first is not None else approval.default)


# -- a continuation is used at most once, whatever the interleaving --------------------------
#
# A small model of the store's optimistic transaction (WATCH, decide with the pure rules, MULTI/EXEC): each actor
# reads the snapshot, later commits; a commit after someone else's write fails and the actor reads again. The
# schedule hypothesis draws says who takes the next step, so it covers every interleaving of reads and commits.

ASK = Approval(
    (Choice((("approved", True),), "done"), Choice((("approved", False),), "ask")),  # "no" asks again: a new visit
    default=None,
    timeout=Timeout(timedelta(hours=1), "rollback"),
)
LOOP = Chart("c", "ask", (State("ask", Func.APPROVAL, approval=ASK), State("done", None), State("rollback", None)))


@dataclass
class Store:
    snap: Snapshot
    version: int = 0
    made: int = 0  # continuation ids made so far: each approval visit gets a fresh one
    log: list[tuple[str | None, str]] = field(default_factory=list)  # (the visit's continuation, how it ended)

    def write(self, before: Snapshot, after: Snapshot, cause: str) -> None:
        if rules.current(LOOP, after).func is Func.APPROVAL:
            self.made += 1
            after = replace(after, continuation=f"id{self.made}")
        self.log.append((before.continuation, cause))
        self.snap, self.version = after, self.version + 1


@dataclass
class Actor:
    """A resume with `continuation` and `given`, or (continuation None) the leader applying due moves."""

    continuation: str | None
    given: dict[str, Any]
    read: tuple[int, Snapshot] | None = None
    outcome: str | None = None

    def step(self, store: Store, now: datetime) -> None:
        if self.outcome is not None:
            return
        if self.read is None or self.read[0] != store.version:  # first step, or WATCH saw a write: read again
            self.read = (store.version, store.snap)
            return
        snap = self.read[1]
        ahead, moves = rules.advance(LOOP, snap, now)  # every writer applies due moves first
        if moves:
            store.write(snap, ahead, moves[0].cause)
            self.outcome = "moved" if self.continuation is None else "expired"
        elif self.continuation is None:
            self.outcome = "idle"
        elif snap.continuation != self.continuation:
            self.outcome = "used"  # 409 continuation_used (or 404 for an id never made)
        else:
            resumed = rules.resume(LOOP, snap, self.continuation, self.given, now)
            if resumed is None:
                self.outcome = "no_match"  # 422; the continuation stays usable
            else:
                store.write(snap, resumed[0], "approval")
                self.outcome = "resumed"


def run(actors: list[Actor], schedule: list[int], now: datetime) -> Store:
    store = Store(Snapshot("ask", 0, T0, continuation="id0"))
    for who in schedule:
        actors[who % len(actors)].step(store, now)
    for actor in actors:  # the rest, one after another: nobody conflicts any more
        while actor.outcome is None:
            actor.step(store, now)
    return store


RESUMES = st.builds(
    Actor,
    st.sampled_from(["id0", "id0", "id0", "id1", "nope"]),
    st.sampled_from([{"approved": True}, {"approved": False}, {"approved": 1}, {}]),
)


@given(
    st.lists(RESUMES, min_size=1, max_size=6),
    st.booleans(),
    st.lists(st.integers(0, 6), max_size=60),
    st.sampled_from([T0 + timedelta(minutes=30), T0 + timedelta(hours=2)]),
)
def test_a_continuation_resumes_at_most_once_whatever_the_interleaving(
    resumes: list[Actor], leader: bool, schedule: list[int], now: datetime
) -> None:
    actors = [*resumes, Actor(None, {})] if leader else resumes
    store = run(actors, schedule, now)

    first_visit = [cause for visit, cause in store.log if visit == "id0"]
    assert len(first_visit) <= 1  # resumed once, or timed out once, never both, never twice
    assert sum(a.outcome == "resumed" and a.continuation == "id0" for a in actors) <= 1
    assert all(a.outcome != "resumed" for a in actors if a.continuation == "nope")
    if now > T0 + timedelta(hours=1):  # the timeout passed before anyone came: it wins, every resume is refused
        assert first_visit == ["timeout"]
        assert all(a.outcome in ("expired", "used", "moved", "idle") for a in actors)
    elif any(a.continuation == "id0" and pick(ASK, a.given) is not None for a in actors):
        assert first_visit == ["approval"]  # one of them got through; no_match ones left the id usable for it


@given(st.permutations([{"approved": True}, {"approved": False}, {}]))
def test_of_resumes_applied_one_after_another_the_first_that_matches_wins(inputs: list[dict[str, Any]]) -> None:
    actors = [Actor("id0", given_input) for given_input in inputs]
    store = run(actors, [], T0)

    won = next(i for i, a in enumerate(actors) if a.given)  # {} matches no choice and there is no default
    assert actors[won].outcome == "resumed"
    for i, actor in enumerate(actors):
        if i != won:
            assert actor.outcome == ("no_match" if i < won and not actor.given else "used")
    assert store.snap.state == ("done" if actors[won].given == {"approved": True} else "ask")
    assert store.snap.continuation == ("id1" if store.snap.state == "ask" else None)


# -- shadowed is sound, and exact on the input a choice names --------------------------------


@given(choices_to(["go", "stop"], min_size=2), st.data())
def test_a_reported_shadow_means_every_input_matching_the_later_choice_matches_the_earlier(
    choices: tuple[Choice, ...], data: st.DataObject
) -> None:
    for i, j in shadowed(choices):
        assert j < i
        base = dict(choices[i].when)
        # the same values written another way (1 as 1.0), plus fields the choice does not look at
        same_again = {f: float(v) if type(v) is int else v for f, v in base.items()}
        extra = data.draw(INPUTS)
        for given_input in ({**extra, **base}, {**extra, **same_again}):
            assert choices[i].matches(given_input)
            assert choices[j].matches(given_input)


@given(choices_to(["go", "stop"]))
def test_a_choice_is_reported_shadowed_exactly_when_its_own_conditions_reach_an_earlier_one(
    choices: tuple[Choice, ...],
) -> None:
    # the input that sets just a choice's own fields is the one fewest earlier choices match
    never = {i for i, _ in shadowed(choices)}
    for i, choice in enumerate(choices):
        assert (first_match(choices, dict(choice.when)) == i) == (i not in never)


# -- generated charts parse exactly when problems() finds nothing ----------------------------


@st.composite
def approval_charts(draw: st.DrawFn) -> tuple[dict[str, Approval], str]:
    """Approval states a0.. (a0 first) whose next states are any state of the chart or a name it lacks, as YAML."""
    names = [f"a{i}" for i in range(draw(st.integers(1, 3)))]
    writable = approvals_to([*names, *FINALS, "ghost"]).filter(_writable)
    approvals = {name: draw(writable) for name in names}
    states: list[dict[str, Any]] = []
    for name, approval in approvals.items():
        doc: dict[str, Any] = {"name": name, "func": "approval"}
        if approval.choices:
            doc["choices"] = [{"when": dict(c.when), "next": c.next} for c in approval.choices]
        if approval.default is not None:
            doc["default"] = approval.default
        if approval.timeout is not None:
            doc["timeout"] = {"after": f"{int(approval.timeout.after.total_seconds())}s", "next": approval.timeout.next}
        if approval.notify is not None:
            doc["notify"] = approval.notify
        states.append(doc)
    states += [{"name": s} for s in FINALS]
    return approvals, yaml.safe_dump({"current_state": "a0", "states": states}, sort_keys=False)


def _writable(approval: Approval) -> bool:
    """A chart cannot write infinity in `when` (it reads `.inf` as text, as JSON would): no resume could send it."""
    return all(v != float("inf") for c in approval.choices for _, v in c.when)


@given(approval_charts())
def test_a_generated_chart_parses_without_errors_exactly_when_problems_finds_none(
    generated: tuple[dict[str, Approval], str],
) -> None:
    approvals, text = generated
    names = [*approvals, *FINALS]
    found = {name: problems(a, names) for name, a in approvals.items()}
    result = parse(text, "gen.yaml")

    assert bool(result.errors) == any(found.values()), (found, [str(p) for p in result.errors])
    if result.errors:
        return
    chart = result.unwrap()
    for name, approval in approvals.items():
        state = chart.state(name)
        assert state is not None and state.func is Func.APPROVAL
        assert state.approval == approval and typed(state.approval) == typed(approval)
    assert all("unreachable" in p.message for p in result.warnings)
