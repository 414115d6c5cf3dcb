"""core/machine_approvals.py through configuration_from and parse_configuration: approval states of configurations,
their problems by path (JSON) and by line (YAML), and the document answered as posted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from stateservice.core.approvals import Approval, Choice, Timeout, pick
from stateservice.core.machines import Invalid, configuration_from
from stateservice.core.parse_configuration import parse_configuration
from stateservice.errors import ChartError


def review(**changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "name": "review",
        "type": "approval",
        "choices": [{"when": {"approved": True}, "next": "go"}, {"when": {"approved": False}, "next": "new"}],
        "default": "new",
        "timeout": {"after": "1h30m", "next": "new"},
        "notify": "https://hooks.example/approve",
    }
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


def document(*states: Any) -> dict[str, Any]:
    return {
        "name": "orders",
        "version": "v1",
        "states": ["new", *states, "go"],
        "starting_state": "new",
        "transitions": [{"from": "new", "to": "review", "event": "submit"}],
    }


def findings(data: dict[str, Any]) -> list[str]:
    with pytest.raises(Invalid) as caught:
        configuration_from(data)
    return [str(f) for f in caught.value.findings]


def test_an_approval_state_is_read_and_answered_as_posted() -> None:
    configuration = configuration_from(document(review()))
    assert configuration.states == ("new", "review", "go")
    assert configuration.approval("review") == Approval(
        (Choice((("approved", True),), "go"), Choice((("approved", False),), "new")),
        "new",
        Timeout(timedelta(hours=1, minutes=30), "new"),
        "https://hooks.example/approve",
    )
    assert configuration.approval("new") is None
    assert configuration.document() == document(review())
    assert configuration_from(configuration.document()) == configuration


def test_plain_states_keep_working_and_compare_unequal_to_approvals() -> None:
    plain = configuration_from(document("review"))
    assert plain.approval("review") is None and plain.document() == document("review")
    assert plain != configuration_from(document(review()))


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (
            review(choices=[{"when": {"approved": True}, "next": "nowhere"}]),
            "states.1.choices.0.next: unknown state 'nowhere'; the states are new, review, go",
        ),
        (review(default="lost"), "states.1.default: unknown state 'lost'; the states are new, review, go"),
        (review(timeout={"after": "1h", "next": "x"}), "states.1.timeout.next: unknown state 'x'"),
        (review(timeout={"after": "soon", "next": "new"}), "states.1.timeout.after: 'soon' is not a duration"),
        (review(timeout={"after": 5, "next": "new"}), "states.1.timeout.after: 5 is not a duration"),
        (review(timeout={"after": "1h"}), "states.1.timeout: timeout is {after: DURATION, next: STATE}"),
        (review(type="wait"), "states.1.type: 'wait': a state given as an object has type approval"),
        (review(colour="red"), "states.1.colour: unknown key"),
        (review(notify="ftp://x"), "states.1.notify: notify must be an http:// or https:// URL with a host, not one"),
        (review(choices=[{"when": {"a": [1]}, "next": "go"}]), "states.1.choices.0.when.a: must be a single value"),
        (review(choices=[{"next": "go"}]), "states.1.choices.0: a choice is {when: {FIELD: VALUE}, next: STATE}"),
        (review(choices=[{"when": {}, "next": "go"}]), "states.1.choices.0: choices[0]: `when` is empty"),
        (
            review(choices=[{"when": {"a": 1}, "next": "go"}, {"when": {"a": 1, "b": 2}, "next": "new"}]),
            "states.1.choices.1: choices[1] can never match: choices[0] matches every input it does",
        ),
        (review(default=None, timeout=None), "states.1: an approval state needs `default` or `timeout`"),
        (review(choices=None, default=None), "states.1: an approval state needs `choices` or `default`"),
    ],
)
def test_each_problem_is_named_by_its_path(state: dict[str, Any], expected: str) -> None:
    found = findings(document(state))
    assert any(f.startswith(expected) for f in found), found


def test_a_broken_approval_state_still_names_a_state_for_the_transitions() -> None:
    found = findings(document(review(default="lost")))
    assert not any(f.startswith("transitions") for f in found), found


YAML = """\
name: orders
version: v1
states:
  - new
  - name: review
    type: approval
    choices:
      - when: {approved: true, level: 2, note: "true", who: null, slot: 12:30, tilde: ~}
        next: go
      - when: {approved: false}
        next: new
    timeout: {after: 1h, next: new}
  - go
starting_state: new
transitions:
  - {from: new, to: review, event: submit}
"""


def test_a_yaml_file_reads_when_values_as_json_does() -> None:
    approval = parse_configuration(YAML, "c.yaml").approval("review")
    assert approval is not None
    when = {"approved": True, "level": 2, "note": "true", "who": None, "slot": "12:30", "tilde": "~"}
    assert approval.choices[0].when == tuple(when.items())  # not YAML 1.1's 750 and null
    assert pick(approval, when) == "go"
    assert pick(approval, {"approved": False}) == "new"
    assert approval.timeout == Timeout(timedelta(hours=1), "new")


@pytest.mark.parametrize(
    ("written", "value"),
    [("1e3", 1000.0), ("12:30", "12:30"), ("0x10", "0x10"), ("010", "010"), ("yes", "yes"), ("'2'", "2"), ("-1", -1)],
)
def test_a_yaml_file_reads_when_values_as_a_chart_file_does(written: str, value: Any) -> None:
    text = YAML.replace("when: {approved: false}", f"when: {{v: {written}}}")
    approval = parse_configuration(text, "c.yaml").approval("review")
    assert approval is not None
    assert approval.choices[1].when == (("v", value),) and type(approval.choices[1].when[0][1]) is type(value)


def test_a_yaml_file_cannot_write_a_number_too_large_to_be_finite() -> None:
    with pytest.raises(ChartError) as caught:
        parse_configuration(YAML.replace("when: {approved: false}", "when: {n: 1e400}"), "c.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "c.yaml:10: states.1.choices.1.when.n: is too large for a number; quote it if it is text"
    ]


def test_a_yaml_file_names_each_problem_by_its_line() -> None:
    bad = YAML.replace("        next: new\n", "        next: nowhere\n").replace("after: 1h", "after: soon")
    with pytest.raises(ChartError) as caught:
        parse_configuration(bad, "c.yaml")
    lines = [str(p) for p in caught.value.problems]
    assert lines[0].startswith("c.yaml:11: states.1.choices.1.next: unknown state 'nowhere'"), lines
    assert lines[1].startswith("c.yaml:12: states.1.timeout.after: 'soon' is not"), lines
    also = "approved: true, level: 2, note: 'true', who: null, slot: '12:30', tilde: '~', x: 1"
    shadowed = YAML.replace("when: {approved: false}", f"when: {{{also}}}")
    with pytest.raises(ChartError) as caught:
        parse_configuration(shadowed, "c.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "c.yaml:10: states.1.choices.1: choices[1] can never match: choices[0] matches every input it does"
    ]
