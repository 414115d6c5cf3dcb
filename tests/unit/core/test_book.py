"""core/book.py: the reference model of the instance store, by example and by hypothesis properties."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateservice.core.book import Book, Instance, Outcome, Result
from stateservice.core.machines import Configuration, Invalid, configuration_from, instance_id
from stateservice.errors import InstanceExists, UnknownConfiguration, UnknownInstance
from tests.support.machines import EVENTS, PROPERTY_SETS, STATES, configuration_docs, properties

HOST = configuration_from(
    {
        "name": "host",
        "version": "v1",
        "states": ["up", "draining", "drained", "upgraded"],
        "transitions": [
            {"from": "up", "to": "draining", "event": "drain", "requires": {"chart": "rollout", "state": "wave1"}},
            {"from": "draining", "to": "drained", "event": "drained"},
            {"from": "drained", "to": "upgraded", "event": "upgrade"},
            {"from": "upgraded", "to": "up", "event": "back"},
        ],
        "starting_state": "up",
    }
)
ORDER = configuration_from(
    {
        "name": "order",
        "version": "v1",
        "states": ["new", "paid"],
        "transitions": [
            {
                "from": "new",
                "to": "paid",
                "event": "pay",
                "requires": {"configuration": "host:v1", "properties": {"host": "web1"}, "state": "drained"},
            }
        ],
        "starting_state": "new",
    }
)
WAVE1 = {"rollout": "wave1"}


def book() -> Book:
    return Book({"host:v1": HOST, "order:v1": ORDER})


# -- creating ---------------------------------------------------------------------------------


def test_create_by_id_generated_or_given() -> None:
    b = book()

    assert b.create("host:v1") == ("i-1", True)
    assert b.create("host:v1", "web1-lifecycle") == ("web1-lifecycle", True)
    assert b.instance("web1-lifecycle") == Instance("web1-lifecycle", "host:v1", "up")
    assert b.counts("host:v1") == {"up": 2, "draining": 0, "drained": 0, "upgraded": 0}


def test_a_generated_id_skips_one_already_taken() -> None:
    ids = iter(["a", "a", "b"])
    b = Book({"host:v1": HOST}, new_id=lambda: next(ids))

    assert [b.create("host:v1")[0] for _ in range(2)] == ["a", "b"]


def test_an_explicit_id_names_one_instance_for_good() -> None:
    b = book()
    b.create("host:v1", "x")

    with pytest.raises(InstanceExists) as caught:
        b.create("order:v1", "x")

    assert (caught.value.status, caught.value.code, caught.value.fields) == (
        409,
        "instance_exists",
        {"id": "x", "configuration": "host:v1"},
    )
    assert b.instance("x").configuration == "host:v1"


@pytest.mark.parametrize("bad", ["", "a b", "-x", "x" * 129, "p-abc"])
def test_a_bad_explicit_id(bad: str) -> None:
    with pytest.raises(Invalid) as caught:
        book().create("host:v1", bad)

    assert [f.path for f in caught.value.findings] == [("id",)]


def test_create_by_properties_in_any_order_is_one_instance() -> None:
    b = book()

    first = b.create("host:v1", properties={"host": "web1", "rack": "r3"})
    again = b.create("host:v1", properties={"rack": "r3", "host": "web1"})

    assert first == (instance_id("host:v1", {"host": "web1", "rack": "r3"}), True)
    assert again == (first[0], False)
    assert b.instance(first[0]).properties == (("host", "web1"), ("rack", "r3"))
    assert b.create("order:v1", properties={"host": "web1", "rack": "r3"})[0] != first[0]  # the ref is in the name
    assert b.counts("host:v1")["up"] == 1


def test_create_refuses() -> None:
    b = book()

    with pytest.raises(UnknownConfiguration) as unknown:
        b.create("nope:v1")
    assert (unknown.value.status, unknown.value.fields) == (404, {"configuration": "nope:v1"})
    with pytest.raises(Invalid, match="not both"):
        b.create("host:v1", "x", {"host": "web1"})
    with pytest.raises(Invalid, match="non-empty mapping"):
        b.create("host:v1", properties={})
    with pytest.raises(Invalid, match="must be a string"):
        b.create("host:v1", properties={"host": 3})
    assert b.instances() == []


def test_state_instance_and_counts_of_the_unknown() -> None:
    b = book()

    with pytest.raises(UnknownInstance) as caught:
        b.state("ghost")
    assert (caught.value.status, caught.value.code) == (404, "unknown_instance")
    with pytest.raises(UnknownConfiguration):
        b.counts("nope:v1")


# -- events -----------------------------------------------------------------------------------


def test_an_event_moves_the_instance() -> None:
    b = book()
    ident, _ = b.create("host:v1", "h")

    outcome = b.apply(ident, "drain", "e1", WAVE1)

    assert outcome == Outcome("e1", Result.OK, "up", "draining", "draining")
    assert outcome.document() == {
        "event_id": "e1",
        "outcome": "ok",
        "from": "up",
        "to": "draining",
        "state": "draining",
        "duplicate": False,
    }
    assert b.state(ident) == "draining"
    assert b.counts("host:v1") == {"up": 0, "draining": 1, "drained": 0, "upgraded": 0}
    assert b.outcome(ident, "e1") == outcome


def test_an_event_not_allowed_here() -> None:
    b = book()
    b.create("host:v1", "h")

    assert b.apply("h", "upgrade", "e1", WAVE1) == Outcome("e1", Result.TRANSITION_NOT_ALLOWED, "up", None, "up")
    assert b.apply("h", "no-such-event", "e2", WAVE1).outcome == "transition_not_allowed"
    assert b.state("h") == "up"


def test_a_chart_requirement() -> None:
    b = book()
    b.create("host:v1", "h")

    for charts in ({}, {"rollout": "wave2"}, {"other": "wave1"}):
        outcome = b.apply("h", "drain", f"e-{len(charts)}-{charts}", charts)
        assert outcome == Outcome(outcome.event_id, Result.REQUIREMENT_NOT_MET, "up", "draining", "up")
    assert b.apply("h", "drain", "e-ok", WAVE1).outcome == Result.OK


def test_an_instance_requirement_reads_the_book() -> None:
    b = book()
    order, _ = b.create("order:v1", "o")

    assert b.apply(order, "pay", "e1", {}).outcome == "requirement_not_met"  # web1 does not exist yet
    web1 = ("host:v1", {"host": "web1"})
    for n, event in enumerate(["drain", "drained"]):
        b.apply(web1, event, f"h{n}", WAVE1)
    assert b.state(instance_id("host:v1", {"host": "web1"})) == "drained"
    assert b.apply(order, "pay", "e2", {}) == Outcome("e2", Result.OK, "new", "paid", "paid")


def test_addressing_by_properties_creates_at_the_starting_state() -> None:
    b = book()

    outcome = b.apply(("host:v1", {"host": "web9"}), "upgrade", "e1", {})

    assert outcome.outcome == "transition_not_allowed"
    assert b.instances() == [Instance(instance_id("host:v1", {"host": "web9"}), "host:v1", "up", (("host", "web9"),))]
    with pytest.raises(UnknownConfiguration):
        b.apply(("nope:v1", {"host": "web9"}), "upgrade", "e1", {})
    with pytest.raises(Invalid):
        b.apply(("host:v1", {}), "upgrade", "e1", {})


def test_an_unknown_instance() -> None:
    b = book()

    assert b.apply("ghost", "drain", "e1", WAVE1) == Outcome("e1", Result.UNKNOWN_INSTANCE)
    b.create("host:v1", "ghost")
    assert b.apply("ghost", "drain", "e1", WAVE1) == Outcome("e1", Result.UNKNOWN_INSTANCE, duplicate=True)
    assert b.apply("ghost", "drain", "e2", WAVE1).outcome == "ok"


def test_the_same_event_id_answers_the_first_outcome_and_changes_nothing() -> None:
    b = book()
    b.create("host:v1", "h")
    b.create("host:v1", "other")
    first = b.apply("h", "drain", "e1", WAVE1)

    again = b.apply("h", "drained", "e1", WAVE1)  # same id, even another event: the first answer

    assert again == Outcome("e1", Result.OK, "up", "draining", "draining", duplicate=True)
    assert b.state("h") == "draining"
    assert b.outcome("h", "e1") == first  # kept as first answered, not as a duplicate
    assert b.apply("other", "drain", "e1", WAVE1).duplicate is False  # event ids are per instance


def test_a_refusal_is_kept_too() -> None:
    b = book()
    b.create("host:v1", "h")
    b.apply("h", "drain", "e1", {})

    assert b.apply("h", "drain", "e1", WAVE1) == Outcome("e1", Result.REQUIREMENT_NOT_MET, "up", "draining", "up", True)
    assert b.state("h") == "up"


# -- properties -------------------------------------------------------------------------------

REFS = ("a:v1", "b:v1")
ids = st.sampled_from(["x", "y", "z"])
targets = st.one_of(ids, st.tuples(st.sampled_from(REFS), properties))
charts = st.fixed_dictionaries({}, optional={"rollout": st.sampled_from(STATES), "fleet": st.sampled_from(STATES)})
creates = st.tuples(st.just("create"), st.sampled_from(REFS), st.one_of(st.none(), ids), st.none() | properties)
applies = st.tuples(
    st.just("apply"), targets, st.sampled_from(EVENTS), st.sampled_from(["e1", "e2", "e3", "e4", "e5"]), charts
)
operations = st.lists(st.one_of(creates, applies), max_size=60)
configurations = st.tuples(configuration_docs("a", "v1", refs=REFS), configuration_docs("b", "v1", refs=REFS)).map(
    lambda docs: {c.ref: c for c in map(configuration_from, docs)}
)


def run(b: Book, ops: list[tuple[Any, ...]], check: bool = True) -> list[tuple[Any, ...]]:
    """Run `ops` on `b`, checking the invariants after each; the applies, each with its outcome (the event log)."""
    log = []
    for op in ops:
        if op[0] == "create":
            _, ref, ident, props = op
            with contextlib.suppress(InstanceExists, Invalid):  # an id taken, or both an id and properties
                b.create(ref, ident, props)
        else:
            _, target, event, event_id, chart_states = op
            log.append((*op[1:], b.apply(target, event, event_id, chart_states)))
        if check:
            check_invariants(b)
    return log


def check_invariants(b: Book) -> None:
    for instance in b.instances():
        assert instance.state in b.configurations[instance.configuration].states
    for ref, configuration in b.configurations.items():
        recount = Counter(i.state for i in b.instances(ref))
        assert b.counts(ref) == {state: recount[state] for state in configuration.states}


def snapshot(b: Book) -> tuple[Any, ...]:
    return tuple(b.instances()), {ref: b.counts(ref) for ref in b.configurations}


@settings(deadline=None)
@given(configurations, operations)
def test_states_stay_declared_and_counts_equal_a_recount(configurations: dict[str, Configuration], ops: Any) -> None:
    run(Book(configurations), ops)


@settings(deadline=None)
@given(configurations, operations, st.data())
def test_an_event_id_is_applied_at_most_once(
    configurations: dict[str, Configuration], ops: Any, data: st.DataObject
) -> None:
    b = Book(configurations)
    log = run(b, ops, check=False)
    applied = Counter((ident, o.event_id) for ident, o in resolved(log) if o.outcome == "ok" and not o.duplicate)
    assert all(n == 1 for n in applied.values())

    before = snapshot(b)
    prefix = data.draw(st.integers(0, len(log)))
    for target, event, event_id, _, first in log[:prefix]:
        chart_states = data.draw(charts)  # whatever the charts say now, a replay changes nothing
        again = b.apply(target, event, event_id, chart_states)
        assert again.duplicate
        assert again.outcome == first.outcome and (again.source, again.target) == (first.source, first.target)
    assert snapshot(b) == before


def resolved(log: list[tuple[Any, ...]]) -> list[tuple[str, Outcome]]:
    return [(t if isinstance(t, str) else instance_id(t[0], t[1]), o) for t, *_, o in log]


@settings(deadline=None)
@given(configurations, operations)
def test_an_outcome_is_kept_as_first_answered(configurations: dict[str, Configuration], ops: Any) -> None:
    b = Book(configurations)
    firsts: dict[tuple[str, str], Outcome] = {}
    for ident, outcome in resolved(run(b, ops, check=False)):
        first = firsts.setdefault((ident, outcome.event_id), outcome)
        assert outcome.duplicate == (first is not outcome)
        assert b.outcome(ident, outcome.event_id) == first


def test_the_property_sets_name_distinct_instances() -> None:
    # the strategies above rely on this: each property set is its own instance
    assert len({instance_id("a:v1", p) for p in PROPERTY_SETS}) == len(PROPERTY_SETS)
