"""core/machines.py: every finding a configuration can produce, the step rule, ids, properties, references."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateservice.core.machines import (
    MAX_PROPERTIES,
    MAX_PROPERTY_VALUE,
    MAX_STATES,
    MAX_TRANSITIONS,
    RESERVED_PROPERTIES,
    Configuration,
    Finding,
    Invalid,
    Requirement,
    Transition,
    canonical_properties,
    check_properties,
    configuration_from,
    instance_id,
    parse_ref,
    step,
)
from tests.support.machines import EVENTS, configuration_docs


def orders(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "orders",
        "version": "v1",
        "states": ["new", "paid", "shipped", "cancelled"],
        "transitions": [
            {"from": "new", "to": "paid", "event": "pay"},
            {"from": "paid", "to": "shipped", "event": "ship", "requires": {"chart": "rollout", "state": "wave1"}},
            {"from": "new", "to": "cancelled", "event": "cancel"},
            {"from": "paid", "to": "cancelled", "event": "cancel"},
        ],
        "starting_state": "new",
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not DROP}


DROP = object()


def findings(doc: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(Invalid) as caught:
        configuration_from(doc)
    assert str(caught.value) == "; ".join(str(f) for f in caught.value.findings)
    return [(f.path, f.message) for f in caught.value.findings]


def transition(**fields: Any) -> dict[str, Any]:
    return {"from": "new", "to": "paid", "event": "pay", **fields}


# -- a good configuration --------------------------------------------------------------------


def test_a_good_configuration_reads_every_field() -> None:
    c = configuration_from(orders())

    assert (c.name, c.version, c.ref) == ("orders", "v1", "orders:v1")
    assert c.states == ("new", "paid", "shipped", "cancelled")
    assert c.starting_state == "new"
    assert c.transitions[0] == Transition("new", "paid", "pay")
    assert c.transitions[1].requires == Requirement("wave1", chart="rollout")
    assert c.events() == ["cancel", "pay", "ship"]
    assert c.allowed("new") == ["cancel", "pay"]
    assert c.allowed("paid") == ["cancel", "ship"]
    assert c.allowed("shipped") == []
    assert c.allowed("no-such-state") == []
    assert dict(c.moves("cancel")) == {
        "new": Transition("new", "cancelled", "cancel"),
        "paid": Transition("paid", "cancelled", "cancel"),
    }
    assert c.moves("unknown") == {}


def test_transitions_are_optional() -> None:
    c = configuration_from(orders(transitions=DROP))

    assert c.transitions == ()
    assert c.events() == [] and c.allowed("new") == []


def test_step_follows_the_transition_for_the_current_state() -> None:
    c = configuration_from(orders())

    assert step(c, "new", "pay") == Transition("new", "paid", "pay")
    assert step(c, "paid", "cancel") == Transition("paid", "cancelled", "cancel")
    assert step(c, "shipped", "cancel") is None  # declared event, not from here
    assert step(c, "new", "refund") is None  # no such event
    assert step(c, "nowhere", "pay") is None


def test_the_document_round_trips() -> None:
    doc = orders(
        transitions=[
            {"from": "new", "to": "paid", "event": "pay"},
            {
                "from": "paid",
                "to": "shipped",
                "event": "ship",
                "requires": {"configuration": "host:v2", "properties": {"rack": "r3", "host": "web1"}, "state": "up"},
            },
            {"from": "paid", "to": "new", "event": "undo", "requires": {"chart": "rollout", "state": "wave1"}},
        ]
    )
    c = configuration_from(doc)

    assert c.document() == doc
    assert configuration_from(c.document()) == c
    assert c.transitions[1].requires is not None
    assert c.transitions[1].requires.properties == (("host", "web1"), ("rack", "r3"))  # sorted once, here


def test_replace_rebuilds_the_event_index_and_leaves_the_original_alone() -> None:
    c = configuration_from(orders())

    emptied = replace(c, transitions=())

    assert emptied.moves("pay") == {} and emptied.allowed("new") == []
    assert step(c, "new", "pay") == Transition("new", "paid", "pay")


def test_equal_configurations_are_equal_and_hash_alike() -> None:
    a, b = configuration_from(orders()), configuration_from(orders())

    assert a == b and hash(a) == hash(b)
    assert a != configuration_from(orders(version="v2"))


# -- findings --------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", [None, [], "orders", 3])
def test_a_document_that_is_not_a_mapping(doc: Any) -> None:
    assert findings(doc) == [((), "a configuration is a JSON object with name, version, states, transitions")]


def test_an_empty_mapping_names_every_missing_key() -> None:
    assert findings({}) == [
        (("name",), "is required"),
        (("version",), "is required"),
        (("states",), "is required: a non-empty list of state names"),
        (("starting_state",), "is required: the state every instance starts in"),
    ]


@pytest.mark.parametrize("key", ["name", "version"])
@pytest.mark.parametrize("value", ["a:b", "", "-x", "x" * 65, "a b", 3, True, ["a"], {"a": 1}])
def test_a_bad_name_or_version(key: str, value: Any) -> None:
    assert findings(orders(**{key: value})) == [
        ((key,), f"{value!r} is not a name: letters, digits, '.', '_', '-', up to 64, no ':'")
    ]


@pytest.mark.parametrize("value", [None, [], "new", {"new": 1}, 3])
def test_states_must_be_a_non_empty_list(value: Any) -> None:
    assert findings(orders(states=value, transitions=DROP)) == [
        (("states",), "is required: a non-empty list of state names")
    ]


def test_each_bad_state_is_named_by_its_index() -> None:
    doc = orders(states=["new", 3, "a b", "new", None, "paid"], transitions=DROP)

    assert findings(doc) == [
        (("states", 1), "3 is not a state name: letters, digits, '.', '_', '-'"),
        (("states", 2), "'a b' is not a state name: letters, digits, '.', '_', '-'"),
        (("states", 3), "state 'new' is listed twice"),
        (("states", 4), "None is not a state name: letters, digits, '.', '_', '-'"),
    ]


def test_too_many_states() -> None:
    states = [f"s{i}" for i in range(MAX_STATES + 1)]

    assert findings(orders(states=states, transitions=DROP, starting_state="s0")) == [
        (("states",), f"at most {MAX_STATES} states; got {MAX_STATES + 1}")
    ]
    assert configuration_from(orders(states=states[:-1], transitions=DROP, starting_state="s0")).states == tuple(
        states[:-1]
    )


@pytest.mark.parametrize("value", ["gone", 3, ["new"], ""])
def test_the_starting_state_must_be_one_of_the_states(value: Any) -> None:
    assert findings(orders(starting_state=value)) == [(("starting_state",), f"{value!r} is not one of the states")]


@pytest.mark.parametrize("value", [None, {}, "x", 3])
def test_transitions_must_be_a_list(value: Any) -> None:
    assert findings(orders(transitions=value)) == [(("transitions",), "must be a list of {from, to, event}")]


@pytest.mark.parametrize("item", ["new->paid", 3, None, ["new", "paid", "pay"]])
def test_a_transition_must_be_a_mapping(item: Any) -> None:
    assert findings(orders(transitions=[transition(), item])) == [
        (("transitions", 1), "a transition is a mapping {from, to, event}")
    ]


def test_a_transition_names_every_missing_field() -> None:
    assert findings(orders(transitions=[{}])) == [
        (("transitions", 0, "from"), "is required"),
        (("transitions", 0, "to"), "is required"),
        (("transitions", 0, "event"), "None is not an event name: letters, digits, '.', '_', '-'"),
    ]


@pytest.mark.parametrize("end", ["from", "to"])
@pytest.mark.parametrize("value", ["gone", 3, ["new"], "NEW"])
def test_a_transition_end_must_be_a_declared_state(end: str, value: Any) -> None:
    assert findings(orders(transitions=[transition(**{end: value})])) == [
        (("transitions", 0, end), f"unknown state {value!r}; the states are new, paid, shipped, cancelled")
    ]


def test_transition_ends_when_no_state_is_valid() -> None:
    assert findings(orders(states=[3], transitions=[transition()], starting_state="new")) == [
        (("states", 0), "3 is not a state name: letters, digits, '.', '_', '-'"),
        (("transitions", 0, "from"), "unknown state 'new'; the states are (none)"),
        (("transitions", 0, "to"), "unknown state 'paid'; the states are (none)"),
    ]


@pytest.mark.parametrize("value", ["", "a b", 3, True, None, "x" * 129])
def test_an_event_must_be_a_name(value: Any) -> None:
    assert findings(orders(transitions=[transition(event=value)])) == [
        (("transitions", 0, "event"), f"{value!r} is not an event name: letters, digits, '.', '_', '-'")
    ]


def test_an_event_leads_to_one_state_from_each_state() -> None:
    doc = orders(transitions=[transition(), transition(to="cancelled"), transition()])

    assert findings(doc) == [
        (
            ("transitions", 1),
            "event 'pay' from 'new' is already transition 0: an event must lead to one state",
        ),
        (
            ("transitions", 2),
            "event 'pay' from 'new' is already transition 0: an event must lead to one state",
        ),
    ]


def test_unknown_keys_are_named_where_they_are() -> None:
    doc = orders(colour="red", transitions=[transition(guard="x", **{"3": 1})])
    doc[7] = "seven"

    assert findings(doc) == [
        (("transitions", 0, "guard"), "unknown key; expected event, from, requires, to"),
        (("transitions", 0, "3"), "unknown key; expected event, from, requires, to"),
        (("colour",), "unknown key; expected name, starting_state, states, transitions, version"),
        (("7",), "unknown key; expected name, starting_state, states, transitions, version"),
    ]


def test_every_problem_is_reported_not_only_the_first() -> None:
    doc = {"name": "a:b", "states": ["x", "x"], "starting_state": "y", "transitions": [{"from": "z"}], "extra": 1}

    assert [path for path, _ in findings(doc)] == [
        ("name",),
        ("version",),
        ("states", 1),
        ("starting_state",),
        ("transitions", 0, "from"),
        ("transitions", 0, "to"),
        ("transitions", 0, "event"),
        ("extra",),
    ]


# -- requirements ----------------------------------------------------------------------------


def requirement_findings(requires: Any) -> list[tuple[tuple[str | int, ...], str]]:
    return findings(orders(transitions=[transition(requires=requires)]))


def test_a_chart_requirement() -> None:
    c = configuration_from(orders(transitions=[transition(requires={"chart": "rollout", "state": "wave1"})]))

    requirement = c.transitions[0].requires
    assert requirement == Requirement("wave1", chart="rollout")
    assert requirement.instance() is None
    assert requirement.document() == {"chart": "rollout", "state": "wave1"}


def test_an_instance_requirement_names_the_instance_by_its_properties() -> None:
    requires = {"configuration": "host:v1", "properties": {"host": "web1", "rack": "r3"}, "state": "drained"}
    c = configuration_from(orders(transitions=[transition(requires=requires)]))

    requirement = c.transitions[0].requires
    assert requirement is not None and requirement.chart is None
    assert requirement.instance() == instance_id("host:v1", {"rack": "r3", "host": "web1"})
    assert requirement.document() == requires


@pytest.mark.parametrize("requires", [None, "rollout", ["rollout", "wave1"], 3])
def test_a_requirement_must_be_a_mapping(requires: Any) -> None:
    assert requirement_findings(requires) == [
        (("transitions", 0, "requires"), "requires is {chart, state} or {configuration, properties, state}")
    ]


WHERE = ("transitions", 0, "requires")


@pytest.mark.parametrize("state", [None, "", "a b", 3])
def test_a_requirement_needs_a_state(state: Any) -> None:
    assert requirement_findings({"chart": "rollout", "state": state}) == [
        ((*WHERE, "state"), f"{state!r} is not a state name")
    ]


@pytest.mark.parametrize("chart", [None, "", "a:b", "x" * 65, 3])
def test_a_chart_requirement_needs_a_chart_name(chart: Any) -> None:
    assert requirement_findings({"chart": chart, "state": "wave1"}) == [
        ((*WHERE, "chart"), f"{chart!r} is not a chart name")
    ]


def test_a_chart_requirement_reports_every_problem() -> None:
    assert requirement_findings({"chart": 3, "state": None, "configuration": "a:b"}) == [
        ((*WHERE, "state"), "None is not a state name"),
        ((*WHERE, "configuration"), "unknown key; expected chart, state"),
        ((*WHERE, "chart"), "3 is not a chart name"),
    ]


@pytest.mark.parametrize("ref", [None, "host", "host:", ":v1", "a:b:c", 3])
def test_an_instance_requirement_needs_a_reference(ref: Any) -> None:
    requires = {"configuration": ref, "properties": {"host": "web1"}, "state": "up"}

    assert requirement_findings(requires) == [
        ((*WHERE, "configuration"), f"{ref!r} is not NAME:VERSION (or give chart: NAME)")
    ]


def test_an_instance_requirement_needs_properties() -> None:
    assert requirement_findings({"configuration": "host:v1", "state": "up", "colour": "red"}) == [
        ((*WHERE, "colour"), "unknown key; expected configuration, properties, state"),
        ((*WHERE, "properties"), "must be a non-empty mapping of property names to strings"),
    ]


def test_an_instance_requirement_reports_every_problem() -> None:
    requires = {"configuration": "host", "properties": {"host": 3}, "state": ""}

    assert requirement_findings(requires) == [
        ((*WHERE, "state"), "'' is not a state name"),
        ((*WHERE, "configuration"), "'host' is not NAME:VERSION (or give chart: NAME)"),
        ((*WHERE, "properties", "host"), f"must be a string of 1-{MAX_PROPERTY_VALUE} characters"),
    ]


# -- references, properties, ids --------------------------------------------------------------


def test_parse_ref() -> None:
    assert parse_ref("orders:v1") == ("orders", "v1")
    assert parse_ref("a.b_c-d:1.0.2") == ("a.b_c-d", "1.0.2")


@pytest.mark.parametrize("ref", ["orders", "orders:", ":v1", "a:b:c", "a b:v1", "x" * 65 + ":v1", ""])
def test_parse_ref_refuses(ref: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_ref(ref)

    assert caught.value.findings == (
        Finding((), f"{ref!r} is not NAME:VERSION (letters, digits, '.', '_', '-'; up to 64 each)"),
    )


def test_check_properties_accepts_names_to_strings() -> None:
    assert check_properties({"host": "web1", "rack": "r 3 ü"}) == ({"host": "web1", "rack": "r 3 ü"}, [])
    limit = {f"p{i}": "v" * MAX_PROPERTY_VALUE for i in range(MAX_PROPERTIES)}
    assert check_properties(limit) == (limit, [])


@pytest.mark.parametrize("value", [None, {}, [], "host=web1", [("host", "web1")]])
def test_check_properties_wants_a_non_empty_mapping(value: Any) -> None:
    assert check_properties(value) == (
        {},
        [Finding(("properties",), "must be a non-empty mapping of property names to strings")],
    )


def test_check_properties_names_each_bad_one_and_keeps_the_good() -> None:
    value = {"host": "web1", "a b": "x", 3: "y", "rack": 3, "empty": "", "long": "v" * (MAX_PROPERTY_VALUE + 1)}

    good, found = check_properties(value, ("where",))

    assert good == {"host": "web1"}
    assert found == [
        Finding(("where", "a b"), "a property name is letters, digits, '.', '_', '-'"),
        Finding(("where", "3"), "a property name is letters, digits, '.', '_', '-'"),
        Finding(("where", "rack"), f"must be a string of 1-{MAX_PROPERTY_VALUE} characters"),
        Finding(("where", "empty"), f"must be a string of 1-{MAX_PROPERTY_VALUE} characters"),
        Finding(("where", "long"), f"must be a string of 1-{MAX_PROPERTY_VALUE} characters"),
    ]


def test_check_properties_refuses_lone_surrogates() -> None:
    value = json.loads('{"host": "\\ud800", "rack": "r\\u00e9"}')  # JSON may carry one; UTF-8 cannot

    assert check_properties(value) == (
        {"rack": "ré"},
        [Finding(("properties", "host"), "must be Unicode text: a lone surrogate has no UTF-8")],
    )


def test_check_properties_counts_them() -> None:
    value = {f"p{i}": "v" for i in range(MAX_PROPERTIES + 1)}

    assert check_properties(value)[1] == [
        Finding(("properties",), f"at most {MAX_PROPERTIES} properties; got {MAX_PROPERTIES + 1}")
    ]


def test_finding_and_invalid_read_as_text() -> None:
    assert str(Finding(("transitions", 2, "to"), "is required")) == "transitions.2.to: is required"
    assert str(Finding((), "not an object")) == "not an object"
    error = Invalid([Finding(("a",), "x"), Finding((), "y")])
    assert str(error) == "a: x; y" and isinstance(error, ValueError)


def test_instance_id_shape() -> None:
    ident = instance_id("upgrade:v1", {"host": "web1"})

    assert ident.startswith("p-") and len(ident) == 28
    assert ident[2:].isalnum() and ident == ident.lower()
    assert ident == instance_id("upgrade:v1", {"host": "web1"})


def test_canonical_properties_sort_the_keys() -> None:
    assert canonical_properties({"rack": "r3", "host": "wëb1"}) == '{"host":"wëb1","rack":"r3"}'


property_sets = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9._-]{0,5}", fullmatch=True), st.text(min_size=1, max_size=8), min_size=1, max_size=6
)
refs = st.sampled_from(["upgrade:v1", "upgrade:v2", "drain:v1"])


@given(refs, property_sets, st.randoms(use_true_random=False))
def test_instance_id_does_not_depend_on_property_order(ref: str, props: dict[str, str], rnd: Any) -> None:
    items = list(props.items())
    rnd.shuffle(items)

    assert instance_id(ref, dict(items)) == instance_id(ref, props)


@given(refs, property_sets, refs, property_sets)
def test_instance_id_differs_for_different_names(
    ref: str, props: dict[str, str], ref2: str, props2: dict[str, str]
) -> None:
    assert (instance_id(ref, props) == instance_id(ref2, props2)) == (ref == ref2 and props == props2)


@given(configuration_docs(guards=True), st.lists(st.sampled_from([*EVENTS, "undeclared"]), max_size=40))
def test_step_always_yields_a_declared_state(doc: dict[str, Any], events: list[str]) -> None:
    c = configuration_from(doc)
    state = c.starting_state
    for event in events:
        t = step(c, state, event)
        assert (t is None) == (event not in c.allowed(state))
        if t is not None:
            assert (t.source, t.event) == (state, event)
            state = t.target
        assert state in c.states


@given(configuration_docs(guards=True))
def test_every_valid_document_round_trips(doc: dict[str, Any]) -> None:
    c = configuration_from(doc)

    assert c.document() == doc
    assert configuration_from(c.document()) == c
    assert isinstance(c, Configuration)


def test_a_configuration_has_at_most_max_transitions() -> None:
    states = ["a", "b"]
    moves = [{"from": "a", "to": "b", "event": f"e{n}"} for n in range(MAX_TRANSITIONS + 1)]

    with pytest.raises(Invalid) as caught:
        configuration_from({"name": "n", "version": "v", "states": states, "transitions": moves, "starting_state": "a"})

    assert caught.value.findings == (
        Finding(("transitions",), f"at most {MAX_TRANSITIONS} transitions; got {MAX_TRANSITIONS + 1}"),
    )


@pytest.mark.parametrize("name", sorted(RESERVED_PROPERTIES))
def test_the_querys_own_parameters_are_no_property_names(name: str) -> None:
    properties, findings = check_properties({name: "x", "host": "web1"})

    assert properties == {"host": "web1"}
    assert [f.path for f in findings] == [("properties", name)]
    assert "is no property name" in findings[0].message
