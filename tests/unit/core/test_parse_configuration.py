"""parse_configuration.py: a configuration file gives its Configuration, or every problem as `file:line: message`."""

from __future__ import annotations

from textwrap import dedent
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stateservice.core.machines import Configuration, Requirement, Transition, configuration_from
from stateservice.core.parse_configuration import MAX_DEPTH, MAX_VALUES, line_at, parse_configuration
from stateservice.errors import ChartError
from tests.support.machines import configuration_docs

GOOD = """\
name: orders
version: 1.10
states: [new, paid, shipped, "yes"]
starting_state: new
transitions:
  - {from: new, to: paid, event: pay}
  - from: paid
    to: shipped
    event: on
    requires: {chart: rollout, state: wave1}
  - from: paid
    to: yes
    event: off
    requires:
      configuration: host:v1
      properties: {rack: r3, host: web1}
      state: drained
"""


def problems(text: str, path: str = "c.yaml") -> list[str]:
    with pytest.raises(ChartError) as caught:
        parse_configuration(dedent(text), path)
    lines = [p.line for p in caught.value.problems]
    assert lines == sorted(lines)
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return [str(p) for p in caught.value.problems]


def test_a_good_file() -> None:
    c = parse_configuration(GOOD, "orders.yaml")

    assert (c.name, c.version, c.starting_state) == ("orders", "1.10", "new")  # the text written, not 1.1
    assert c.states == ("new", "paid", "shipped", "yes")  # yes/on/off stay words, as in chart files
    assert c.transitions[0] == Transition("new", "paid", "pay")
    assert c.transitions[1] == Transition("paid", "shipped", "on", Requirement("wave1", chart="rollout"))
    assert c.transitions[2].requires == Requirement(
        "drained", configuration="host:v1", properties=(("host", "web1"), ("rack", "r3"))
    )


def test_a_file_and_its_json_document_are_the_same_configuration() -> None:
    c = parse_configuration(GOOD, "orders.yaml")

    assert configuration_from(c.document()) == c
    assert parse_configuration(yaml.safe_dump(c.document()), "again.yaml") == c


def test_numbers_and_tags_are_read_as_the_text_written() -> None:
    c = parse_configuration("name: 2024\nversion: !!int 3\nstates: [1, 2.50, 0x1F]\nstarting_state: 1\n", "n.yaml")

    assert (c.name, c.version, c.states, c.starting_state) == ("2024", "3", ("1", "2.50", "0x1F"), "1")


def test_each_finding_is_on_the_line_of_its_node() -> None:
    assert problems(
        """\
        name: orders
        version: v:1
        states:
          - new
          - [x]
          - new
        starting_state: gone
        transitions:
          - from: new
            event: pay
          - {from: new, to: zz, event: "a b", colour: red}
          - 3
          - from: new
            to: new
            event: go
            requires:
              configuration: host:v1
              properties: {host: ""}
              state: up
        colour: x
        """
    ) == [
        "c.yaml:2: version: 'v:1' is not a name: letters, digits, '.', '_', '-', up to 64, no ':'",
        "c.yaml:5: states.1: ['x'] is not a state name: letters, digits, '.', '_', '-'",
        "c.yaml:6: states.2: state 'new' is listed twice",
        "c.yaml:7: starting_state: 'gone' is not one of the states",
        "c.yaml:9: transitions.0.to: is required",  # missing: the line of the transition holding it
        "c.yaml:11: transitions.1.to: unknown state 'zz'; the states are new",
        "c.yaml:11: transitions.1.event: 'a b' is not an event name: letters, digits, '.', '_', '-'",
        "c.yaml:11: transitions.1.colour: unknown key; expected event, from, requires, to",
        "c.yaml:12: transitions.2: a transition is a mapping {from, to, event}",
        "c.yaml:18: transitions.3.requires.properties.host: must be a string of 1-256 characters",
        "c.yaml:20: colour: unknown key; expected name, starting_state, states, transitions, version",
    ]


def test_missing_top_level_keys_are_on_line_one() -> None:
    assert problems("\n\nstates: [a]\n") == [
        "c.yaml:1: name: is required",
        "c.yaml:1: version: is required",
        "c.yaml:1: starting_state: is required: the state every instance starts in",
    ]


def test_an_empty_value_is_missing() -> None:
    assert problems("name:\nversion: ~\nstates: [a]\nstarting_state: a\ntransitions:\n") == [
        "c.yaml:1: name: is required",
        "c.yaml:2: version: is required",
        "c.yaml:5: transitions: must be a list of {from, to, event}",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [a]\nversion: {a: 1}\nstates: [a]\nstarting_state: a\n", ["1: name: ['a'] is not", "2: version: {'a'"]),
        (
            "name: a\nversion: b\nstates: a\nstarting_state: [a]\n",
            ["3: states: is required", "4: starting_state: ['a']"],
        ),
    ],
)
def test_lists_and_mappings_where_text_belongs(text: str, expected: list[str]) -> None:
    found = problems(text)

    assert len(found) == len(expected)
    for message, start in zip(found, expected, strict=True):
        assert message.startswith(f"c.yaml:{start}"), message


def test_duplicate_and_unusable_keys() -> None:
    assert problems(
        """\
        name: a
        version: b
        states: [a]
        starting_state: a
        name: c
        ? [x]
        : y
        """
    ) == [
        "c.yaml:5: duplicate key 'name'",
        "c.yaml:6: a key must be a plain name, not a list or mapping",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [a\n", "c.yaml:2: invalid YAML: expected ',' or ']', but got '<stream end>'"),
        ("name: a\n  version: b: c\n", "c.yaml:2: invalid YAML: mapping values are not allowed here"),
        (
            "a: 1\n---\nb: 2\n",
            "c.yaml:2: invalid YAML: expected a single document in the stream, but found another document",
        ),
        ("a: *nothing\n", "c.yaml:1: invalid YAML: found undefined alias 'nothing'"),
        ("[" * 5000 + "]" * 5000, "c.yaml:1: invalid YAML: exceeded maximum nesting depth"),
        ("", "c.yaml:1: the file is empty; a configuration needs name, version, states"),
        ("# only a comment\n", "c.yaml:1: the file is empty; a configuration needs name, version, states"),
        ("\n- a\n", "c.yaml:2: a configuration is a mapping of name, version, states, transitions"),
        ("just text", "c.yaml:1: a configuration is a mapping of name, version, states, transitions"),
    ],
)
def test_a_file_that_is_no_configuration(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_an_alias_inside_itself() -> None:
    assert problems("name: a\nstates: &s [a, *s]\n") == ["c.yaml:2: an alias refers to a value that contains it"]


def test_aliases_that_expand_past_the_limit() -> None:
    text = "a: &a [" + ",".join(["x"] * 10) + "]\n"
    for previous, anchor in zip("abcde", "bcdef", strict=True):
        text += f"{anchor}: &{anchor} [" + ",".join([f"*{previous}"] * 10) + "]\n"

    assert problems(text + "name: *f\n") == [  # e: 111,111 values
        f"c.yaml:5: the document holds more than {MAX_VALUES} values (counting what aliases repeat)"
    ]


def test_nesting_past_the_limit() -> None:
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)

    assert problems(f"name: a\nstates: {deep}\n") == [f"c.yaml:2: the document nests more than {MAX_DEPTH} levels deep"]


def test_aliases_repeat_their_depth_where_used() -> None:
    half = MAX_DEPTH // 2 + 1
    text = f"a: &a {'[' * half}{']' * half}\nb: &b {'[' * half}*a{']' * half}\n"

    assert problems(text) == [f"c.yaml:1: the document nests more than {MAX_DEPTH} levels deep"]  # the anchor's line


def test_aliases_within_the_limits_are_shared() -> None:
    text = "name: &n orders\nversion: *n\nstates: &s [a, b]\nstarting_state: a\n"

    assert parse_configuration(text, "c.yaml").version == "orders"


def test_line_at_follows_the_path() -> None:
    root = yaml.compose("a:\n  - x\n  - {b: c}\nd: e\n")
    assert root is not None

    assert line_at(root, ()) == 1
    assert line_at(root, ("a",)) == 1
    assert line_at(root, ("a", 1)) == 3
    assert line_at(root, ("a", 1, "b")) == 3
    assert line_at(root, ("a", 1, "missing")) == 3
    assert line_at(root, ("a", 7)) == 1
    assert line_at(root, ("a", "not-an-index")) == 1
    assert line_at(root, ("d",)) == 4
    assert line_at(root, ("d", "deeper")) == 4


@settings(deadline=None)
@given(configuration_docs(), st.sampled_from([False, True, None]))
def test_every_dumped_configuration_parses_back(doc: dict[str, Any], flow: bool | None) -> None:
    c = parse_configuration(yaml.safe_dump(doc, default_flow_style=flow, sort_keys=False), "c.yaml")

    assert isinstance(c, Configuration) and c == configuration_from(doc)


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8))
anything = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
near = configuration_docs().flatmap(
    lambda doc: st.fixed_dictionaries({}, optional={k: st.just(v) | anything for k, v in doc.items()})
)


@st.composite
def yamlish(draw: st.DrawFn) -> str:
    """YAML text of a configuration, a near miss or anything, sometimes with random text spliced in."""
    doc = draw(st.one_of(configuration_docs(), near, anything))
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=draw(st.sampled_from([False, True, None])))
    if draw(st.integers(0, 3)) == 0:
        at_ = draw(st.integers(0, len(text)))
        text = text[:at_] + draw(st.text(max_size=5)) + text[at_:]
    return text


def check(text: str) -> None:
    try:
        c = parse_configuration(text, "c.yaml")
    except ChartError as error:
        last_line = len(text.splitlines()) + 1
        assert error.problems
        for problem in error.problems:
            assert problem.path == "c.yaml" and 1 <= problem.line <= last_line, problem
    else:
        assert configuration_from(c.document()) == c


@settings(deadline=None)
@given(st.text())
@example("[" * 3000)
@example('name: "\\U99999999"\n')
@example("a: &a [*a]\n")
@example("{[")
def test_arbitrary_text_raises_only_chart_error(text: str) -> None:
    check(text)


@settings(deadline=None)
@given(yamlish())
def test_yamlish_documents_raise_only_chart_error(text: str) -> None:
    check(text)
