"""core/asl.py: what an ASL document imports as (each result parsed back by the chart parser), and every refusal."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateservice.core import asl
from stateservice.core.chart import Chart, Func
from stateservice.core.parse import parse
from stateservice.errors import AslRefused

SEED = Path(__file__).parents[3] / "examples" / "asl" / "incsquare.json"
SUSPEND = "module:suspend"
ONLY = "only StringEquals, NumericEquals or BooleanEquals on a top-level field ($.field), alone or under And"
CHOICE_ONLY = (
    'is a Choice, which imports only as the choices of the suspend Task (Resource "module:suspend") whose Next '
    "it is: its input is what the resume brings; only that Task's Next may lead to it"
)
DATA = "stateservice moves between states, it does not transform data"


def machine(start: str | None = None, **states: Any) -> dict[str, Any]:
    return {"StartAt": start or next(iter(states)), "States": states}


def imported(document: object, name: str = "imported") -> tuple[str, Chart]:
    """The chart text and the chart the parser reads from it: no error (the round trip every success needs)."""
    text = asl.convert(document, name, source="m.json")
    parsed = parse(text, "m.yaml")
    assert parsed.errors == [], text
    return text, parsed.unwrap()


def refused(document: object, name: str = "imported") -> list[str]:
    with pytest.raises(AslRefused) as caught:
        asl.convert(document, name)
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return [str(p) for p in caught.value.problems]


def state(chart: Chart, name: str) -> Any:
    return next(s for s in chart.states if s.name == name)


SUSPEND_WITH_CHOICE = machine(
    Ask={
        "Type": "Task",
        "Resource": SUSPEND,
        "Next": "Decide",
        "TimeoutSeconds": 86400,
        "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "Too late"}],
    },
    Decide={
        "Type": "Choice",
        "Choices": [
            {"Variable": "$.approved", "BooleanEquals": True, "Next": "Ship"},
            {
                "And": [
                    {"Variable": "$.approved", "BooleanEquals": False},
                    {"Variable": "$.ticket", "StringEquals": "123"},
                    {"Variable": "$.risk", "NumericEquals": 2.5},
                ],
                "Next": "Stop",
            },
        ],
        "Default": "Ask",
    },
    Ship={"Type": "Succeed"},
    Stop={"Type": "Fail", "Error": "Refused", "Cause": "said no\non ticket 123"},
    **{"Too late": {"Type": "Fail"}},
)


# -- what imports ----------------------------------------------------------------------------


def test_a_suspend_task_and_its_choice_become_one_approval_state() -> None:
    text, chart = imported(SUSPEND_WITH_CHOICE, "ship")
    assert chart.name == "ship" and chart.initial == "Ask"
    assert [s.name for s in chart.states] == ["Ask", "Ship", "Stop", "Too_late"]  # the Choice is inside Ask
    approval = state(chart, "Ask").approval
    assert [(c.when, c.next) for c in approval.choices] == [
        ((("approved", True),), "Ship"),
        ((("approved", False), ("ticket", "123"), ("risk", 2.5)), "Stop"),
    ]
    assert approval.default == "Ask"
    assert (approval.timeout.after, approval.timeout.next) == (timedelta(days=1), "Too_late")
    assert [s.func for s in chart.states[1:]] == [None, None, None]
    assert text.startswith('# Imported by `stateservice import-asl` from "m.json" (Amazon States Language).\n')
    assert (
        "# States renamed to chart state names (letters, digits, '.', '_', '-'):\n"
        '#   "Too late" -> Too_late\n' in text
    )
    assert '  # Fail: Error "Refused", Cause "said no\\non ticket 123"\n  - name: Stop\n' in text


def test_a_suspend_task_without_a_choice_goes_on_by_default_and_states_all_catches_the_timeout() -> None:
    _, chart = imported(
        machine(
            Hold={
                "Type": "Task",
                "Resource": SUSPEND,
                "Next": "Done",
                "Comment": "wait for ops",
                "TimeoutSeconds": 60,
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Done", "Comment": "late is fine"}],
            },
            Done={"Type": "Succeed"},
        )
    )
    approval = state(chart, "Hold").approval
    assert (approval.choices, approval.default) == ((), "Done")
    assert approval.timeout.after == timedelta(seconds=60)


def test_pass_is_a_one_second_time_state_and_a_final_one_when_it_ends() -> None:
    text, chart = imported(
        machine(A={"Type": "Pass", "Next": "B", "Comment": "hi\n  - name: x\u2028y"}, B={"Type": "Pass", "End": True})
    )
    a, b = chart.states
    assert (a.func, a.target.name, a.target.key, a.target.after) == (Func.TIME, "B", "elapsed", timedelta(seconds=1))
    assert b.final
    assert '  # Comment: "hi\\n  - name: x\\u2028y"\n  - name: A\n' in text  # one line, whatever it holds


def test_wait_seconds_is_elapsed_and_wait_timestamp_is_clock() -> None:
    _, chart = imported(
        machine(
            A={"Type": "Wait", "Seconds": 600, "Next": "B"},
            B={"Type": "Wait", "Timestamp": "2027-01-01T09:00:00+02:00", "Next": "C"},
            C={"Type": "Succeed"},
        )
    )
    a, b, _ = chart.states
    assert (a.target.key, a.target.value, a.target.after) == ("elapsed", "600s", timedelta(minutes=10))
    assert (b.target.key, b.target.value) == ("clock", "2027-01-01T09:00:00+02:00")
    assert b.target.due is not None and b.target.due.isoformat() == "2027-01-01T07:00:00+00:00"


def test_names_that_are_no_chart_names_are_renamed_and_every_reference_follows() -> None:
    _, chart = imported(
        machine(
            **{
                "wait here": {"Type": "Wait", "Seconds": 5, "Next": "_hidden"},
                "_hidden": {"Type": "Task", "Resource": SUSPEND, "Next": "é"},
                "é": {"Type": "Succeed"},
                "null": {"Type": "Pass", "Next": "wait here"},
            }
        )
    )
    assert [s.name for s in chart.states] == ["wait_here", "s_hidden", "s_", "null"]
    assert chart.initial == "wait_here"
    assert state(chart, "wait_here").target.name == "s_hidden"
    assert state(chart, "s_hidden").approval.default == "s_"
    assert state(chart, "null").target.name == "wait_here"


def test_values_keep_their_json_types_through_the_yaml() -> None:
    rules = [
        {"Variable": "$.a", "StringEquals": "true", "Next": "End"},
        {"Variable": "$.a", "StringEquals": "null", "Next": "End"},
        {"Variable": "$.a", "StringEquals": "12", "Next": "End"},
        {"Variable": "$.a", "NumericEquals": 12, "Next": "End"},
        {"Variable": "$.a", "NumericEquals": -0.5, "Next": "End"},
        {"Variable": "$.a", "NumericEquals": 1e20, "Next": "End"},
        {"Variable": "$.a", "BooleanEquals": False, "Next": "End"},
        {"Variable": "$.a", "StringEquals": "it's: {x}", "Next": "End"},
        {"Variable": "$.a", "StringEquals": "é\n\u2028# not a comment", "Next": "End"},
        {"Variable": "$.a", "StringEquals": "1e3", "Next": "End"},  # YAML 1.1 writes it unquoted; JSON reads 1000.0
        {"Variable": "$.a", "StringEquals": "-2.5E-1", "Next": "End"},
        {"Variable": "$.a", "StringEquals": "0x10", "Next": "End"},
    ]
    document = machine(
        S={"Type": "Task", "Resource": SUSPEND, "Next": "C"},
        C={"Type": "Choice", "Choices": rules, "Default": "End"},
        End={"Type": "Succeed"},
    )
    _, chart = imported(document)
    values = [c.when[0][1] for c in state(chart, "S").approval.choices]
    assert values == [
        *("true", "null", "12", 12, -0.5, 1e20, False, "it's: {x}", "é\n\u2028# not a comment"),
        *("1e3", "-2.5E-1", "0x10"),
    ]
    assert [type(v) for v in values] == [str, str, str, int, float, float, bool, str, str, str, str, str]


def test_two_suspend_tasks_may_share_a_choice() -> None:
    choice = {"Type": "Choice", "Choices": [{"Variable": "$.ok", "BooleanEquals": True, "Next": "B"}], "Default": "A"}
    _, chart = imported(
        machine(
            A={"Type": "Task", "Resource": SUSPEND, "Next": "C"},
            B={"Type": "Task", "Resource": SUSPEND, "Next": "C"},
            C=choice,
        )
    )
    assert state(chart, "A").approval == state(chart, "B").approval


def test_a_statebox_file_is_read_as_its_one_machine_and_names_the_chart() -> None:
    document = {
        "statemachine": {"hold": machine(H={"Type": "Task", "Resource": SUSPEND, "Next": "D"}, D={"Type": "Succeed"})}
    }
    assert asl.default_name(document, "file") == "hold"
    assert asl.default_name({"StartAt": "x"}, "my file.v2") == "my_file.v2"
    _, chart = imported(document, "hold")
    assert chart.name == "hold"


# -- the statebox example --------------------------------------------------------------------


def test_the_statebox_example_is_refused_for_its_action_tasks_only() -> None:
    document = json.loads(SEED.read_text())
    base = "$.statemachine.incsquare.States"
    only = 'only Task with Resource "module:suspend" (an approval) imports'
    assert refused(document, asl.default_name(document, "incsquare")) == [
        f"{base}.A.Type: Task with Resource 'module:increment' is not supported: {only}",
        f"{base}.B.Type: Task with Resource 'module:square' is not supported: {only}",
        f"{base}.C.Type: Task with Resource 'module:increment' is not supported: {only}",
        f"{base}.SendResponse.Type: Task with Resource 'module:sendResponse' is not supported: {only}",
    ]


def test_the_statebox_example_imports_once_its_actions_are_states_a_chart_can_be() -> None:
    """Its suspend imports as an approval: with the action Tasks replaced by Pass states, all of it imports."""
    document = json.loads(SEED.read_text())
    states = document["statemachine"]["incsquare"]["States"]
    for name, body in states.items():
        if body["Resource"] != SUSPEND:
            states[name] = {"Type": "Pass", **({"Next": body["Next"]} if "Next" in body else {"End": True})}
    _, chart = imported(document, "incsquare")
    assert [(s.name, s.func, s.successors()) for s in chart.states] == [
        ("A", Func.TIME, ["B"]),
        ("B", Func.TIME, ["Suspend"]),
        ("Suspend", Func.APPROVAL, ["C"]),
        ("C", Func.TIME, ["SendResponse"]),
        ("SendResponse", None, []),
    ]


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "messages"),
    [
        ([], ["$: an ASL document is a JSON object with StartAt and States"]),
        ({}, ["$: States must be a non-empty object", "$: StartAt must name the first state"]),
        (
            {"StartAt": 1, "States": []},
            ["$.States: States must be a non-empty object", "$.StartAt: StartAt must name the first state"],
        ),
        (machine("Nope", A={"Type": "Succeed"}), ["$.StartAt: 'Nope' is not a state of States"]),
        (
            {
                **machine(A={"Type": "Succeed"}),
                "TimeoutSeconds": 5,
                "Foo": 1,
                "QueryLanguage": "JSONata",
                "Version": "1.0",
            },
            [
                "$.TimeoutSeconds: TimeoutSeconds is not supported: a chart has no overall deadline",
                "$.Foo: Foo is not supported at the top of a state machine",
                "$.QueryLanguage: 'JSONata' is not supported: only JSONPath (the default)",
            ],
        ),
        (
            {"statemachine": {"a": {}, "b": {}}},
            ["$.statemachine: holds 2 state machines ('a', 'b'); a chart is one: keep one machine in the file"],
        ),
        (
            {"statemachine": {}},
            ["$.statemachine: holds no state machine; a chart is one: keep one machine in the file"],
        ),
        ({"statemachine": {"my one": []}}, ["$.statemachine['my one']: a state machine must be a JSON object"]),
    ],
)
def test_the_document_shape_is_checked_with_paths(document: object, messages: list[str]) -> None:
    assert refused(document) == messages


def test_an_invalid_chart_name_is_refused() -> None:
    assert refused(machine(A={"Type": "Succeed"}), "no good") == [
        "the chart name 'no good' is not valid: use letters, digits, '.', '_', '-' "
        "(at most 64, starting with a letter or digit)"
    ]


def test_other_types_and_tasks_and_malformed_states_are_refused() -> None:
    types = 'Pass, Wait, Choice, Succeed, Fail and Task with Resource "module:suspend"'
    document = machine(
        A={"Type": "Parallel", "Branches": []},
        B={"Type": "Map"},
        C={"Type": "Task", "Resource": "arn:aws:lambda:x", "Next": "A"},
        D={"Type": "Task"},
        E={"Next": "A"},
        F=[],
        G={"Type": 3},
        H={"Type": "Succeed", "Next": "F"},
    )
    assert refused(document) == [
        f"$.States.A.Type: 'Parallel' is not supported: only {types} import",
        f"$.States.B.Type: 'Map' is not supported: only {types} import",
        "$.States.C.Type: Task with Resource 'arn:aws:lambda:x' is not supported: only Task with Resource "
        '"module:suspend" (an approval) imports',
        "$.States.D.Type: Task with no Resource is not supported: only Task with Resource "
        '"module:suspend" (an approval) imports',
        f"$.States.E: missing Type (one of {types})",
        "$.States.F: a state must be a JSON object",
        f"$.States.G.Type: 3 is not supported: only {types} import",
        "$.States.H.Next: Next is not supported: not a field of a Succeed state that imports",
    ]  # F is malformed, not missing: H's Next to it is not reported as naming no state


def test_pass_refuses_data_fields_and_needs_exactly_one_of_next_and_end() -> None:
    document = machine(
        A={"Type": "Pass", "Result": {"x": 1}, "ResultPath": "$.x", "Parameters": {}, "Next": "B"},
        B={"Type": "Pass", "InputPath": "$", "OutputPath": "$", "End": True},
        C={"Type": "Pass"},
        D={"Type": "Pass", "Next": "B", "End": True},
        E={"Type": "Pass", "Next": 3},
        F={"Type": "Pass", "Next": "Z", "Foo": 1},
    )
    assert refused(document) == [
        f"$.States.A.Result: Result is not supported: {DATA}",
        f"$.States.A.ResultPath: ResultPath is not supported: {DATA}",
        f"$.States.A.Parameters: Parameters is not supported: {DATA}",
        f"$.States.B.InputPath: InputPath is not supported: {DATA}",
        f"$.States.B.OutputPath: OutputPath is not supported: {DATA}",
        '$.States.C: needs either Next (a state name) or "End": true',
        "$.States.D: has both Next and End",
        "$.States.E.Next: must be the name of a state",
        "$.States.F.Foo: Foo is not supported: not a field of a Pass state that imports",
        "$.States.F.Next: 'Z' is not a state of States",
    ]


def test_wait_refuses_paths_bad_values_and_an_end() -> None:
    document = machine(
        A={"Type": "Wait", "SecondsPath": "$.s", "Next": "G"},
        B={"Type": "Wait", "TimestampPath": "$.t", "Next": "G"},
        C={"Type": "Wait", "Seconds": 0, "Next": "G"},
        D={"Type": "Wait", "Seconds": 1.5, "Next": "G"},
        E={"Type": "Wait", "Timestamp": "2027-01-01T09:00:00", "Next": "G"},
        F={"Type": "Wait", "Seconds": 1, "Timestamp": "2027-01-01T09:00:00Z", "Next": "G"},
        G={"Type": "Wait", "Next": "H"},
        H={"Type": "Wait", "Seconds": 1, "End": True},
        I={"Type": "Wait", "Seconds": 4_000_000_000, "Next": "G"},
        J={"Type": "Wait", "Timestamp": "soon", "Next": "G"},
    )
    assert refused(document) == [
        "$.States.A.SecondsPath: SecondsPath is not supported: a chart's values are written in it, not read from "
        "the input (use Seconds)",
        "$.States.B.TimestampPath: TimestampPath is not supported: a chart's values are written in it, not read from "
        "the input (use Timestamp)",
        "$.States.C.Seconds: must be a positive whole number of seconds, not 0",
        "$.States.D.Seconds: must be a positive whole number of seconds, not 1.5",
        '$.States.E.Timestamp: "2027-01-01T09:00:00" is not a timestamp with an offset, such as 2027-01-01T09:00:00Z',
        "$.States.F: has both Seconds and Timestamp",
        "$.States.G: a Wait state needs Seconds or Timestamp",
        "$.States.H.End: a Wait that ends the machine is not supported: give it a Next (a Succeed state)",
        "$.States.I.Seconds: '4000000000s' is longer than 100 years",
        '$.States.J.Timestamp: "soon" is not a timestamp with an offset, such as 2027-01-01T09:00:00Z',
    ]


def test_time_states_that_would_move_forever_are_refused() -> None:
    document = machine(
        A={"Type": "Pass", "Next": "A"},
        B={"Type": "Wait", "Timestamp": "2027-01-01T09:00:00Z", "Next": "C"},
        C={"Type": "Pass", "Next": "B"},
    )
    assert refused(document) == [
        "$.States.A.Next: leads to itself: a chart's time state cannot (it would never end)",
        "$.States.B.Timestamp: is in a loop of Pass and Wait states (B -> C -> B) that would move forever once "
        "this time has passed",
    ]
    _, chart = imported(machine(A={"Type": "Pass", "Next": "B"}, B={"Type": "Wait", "Seconds": 5, "Next": "A"}))
    assert [s.target.name for s in chart.states] == ["B", "A"]  # an elapsed loop moves on its own, as a chart may


def test_succeed_and_fail_take_no_data_fields() -> None:
    document = machine(
        A={"Type": "Succeed", "OutputPath": "$"},
        B={"Type": "Fail", "ErrorPath": "$.e", "CausePath": "$.c", "Next": "A"},
    )
    assert refused(document) == [
        f"$.States.A.OutputPath: OutputPath is not supported: {DATA}",
        "$.States.B.ErrorPath: ErrorPath is not supported: a chart's values are written in it, not read from the "
        "input (use Error)",
        "$.States.B.CausePath: CausePath is not supported: a chart's values are written in it, not read from the "
        "input (use Cause)",
        "$.States.B.Next: Next is not supported: not a field of a Fail state that imports",
    ]


def test_a_suspend_task_refuses_retry_heartbeats_other_errors_and_an_uncaught_timeout() -> None:
    document = machine(
        A={"Type": "Task", "Resource": SUSPEND, "Next": "Z", "Retry": [], "HeartbeatSeconds": 5, "TimeoutSeconds": 9},
        B={
            "Type": "Task",
            "Resource": SUSPEND,
            "Next": "Z",
            "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "Z"}],
        },
        C={
            "Type": "Task",
            "Resource": SUSPEND,
            "Next": "Z",
            "TimeoutSeconds": 0,
            "Catch": [
                {"ErrorEquals": ["States.TaskFailed", "States.Timeout"], "Next": "Z", "ResultPath": "$.e"},
                {"ErrorEquals": ["States.ALL"], "Next": "Z"},
                {"ErrorEquals": ["States.Timeout"], "Next": "Z"},
                {"ErrorEquals": [], "Next": "Z"},
                {"ErrorEquals": ["States.Timeout"]},
                {"ErrorEquals": ["States.Timeout"], "Next": "Z", "Foo": 1},
            ],
        },
        D={"Type": "Task", "Resource": SUSPEND, "End": True, "TimeoutSecondsPath": "$.t"},
        Z={"Type": "Succeed"},
    )
    assert refused(document) == [
        "$.States.A.Retry: Retry is not supported: a suspend Task has nothing to retry: it waits for a resume or "
        "times out",
        "$.States.A.HeartbeatSeconds: HeartbeatSeconds is not supported: nothing sends heartbeats to an approval; "
        "use TimeoutSeconds",
        '$.States.A.TimeoutSeconds: a timeout needs a Catch with ErrorEquals ["States.Timeout"] (or '
        '["States.ALL"]) naming the state it leads to',
        "$.States.B.Catch: a suspend Task fails only by timing out: give it TimeoutSeconds",
        "$.States.C.TimeoutSeconds: must be a positive whole number of seconds, not 0",
        f"$.States.C.Catch[0].ResultPath: ResultPath is not supported: {DATA}",
        '$.States.C.Catch[0].ErrorEquals: "States.TaskFailed" is not supported: a suspend Task fails only with '
        "States.Timeout",
        "$.States.C.Catch[2]: the timeout is already caught by Catch[1]",
        '$.States.C.Catch[3].ErrorEquals: must be a non-empty list such as ["States.Timeout"]',
        "$.States.C.Catch[4]: a catcher needs a Next: the name of a state",
        "$.States.C.Catch[5].Foo: Foo is not supported: not a field of a catcher that imports",
        "$.States.D.TimeoutSecondsPath: TimeoutSecondsPath is not supported: a chart's values are written in it, "
        "not read from the input (use TimeoutSeconds)",
        "$.States.D.End: a suspend Task needs a Next: the state a resume leads to",
    ]


def test_choice_rules_other_than_equality_on_a_top_level_field_are_refused() -> None:
    choices = [
        {"Or": [{"Variable": "$.a", "StringEquals": "x"}], "Next": "Z"},
        {"Not": {"Variable": "$.a", "StringEquals": "x"}, "Next": "Z"},
        {"Variable": "$.a", "NumericGreaterThan": 3, "Next": "Z"},
        {"Variable": "$.a", "StringEqualsPath": "$.b", "Next": "Z"},
        {"Variable": "$.a.b", "StringEquals": "x", "Next": "Z"},
        {"Variable": "a", "StringEquals": "x", "Next": "Z"},
        {"Variable": "$['a']", "BooleanEquals": "yes", "Next": "Z"},
        {"Variable": "$.a", "NumericEquals": "5", "StringEquals": "5", "Next": "Z"},
        {"Variable": "$.a", "Next": "Z"},
        {"StringEquals": "x", "Next": "Z"},
        {"Variable": "$.a", "StringEquals": "x"},
        {"And": [{"Variable": "$.a", "StringEquals": "x"}, {"Variable": "$.a", "StringEquals": "y"}], "Next": "Z"},
        {"And": [{"And": []}, {"Variable": "$.b", "StringEquals": "x", "Next": "Z"}, 3], "Next": "Z"},
        {"And": [], "Variable": "$.a", "Next": "Z"},
        "x",
    ]
    document = machine(
        S={"Type": "Task", "Resource": SUSPEND, "Next": "C"},
        C={"Type": "Choice", "Choices": choices, "Default": "Z", "InputPath": "$"},
        Z={"Type": "Succeed"},
    )
    rule = "$.States.C.Choices"
    assert refused(document) == [
        f"$.States.C.InputPath: InputPath is not supported: {DATA}",
        f"{rule}[0].Or: Or is not supported: {ONLY}",
        f"{rule}[1].Not: Not is not supported: {ONLY}",
        f"{rule}[2].NumericGreaterThan: NumericGreaterThan is not supported: {ONLY}",
        f"{rule}[3].StringEqualsPath: StringEqualsPath is not supported: {ONLY}",
        f"{rule}[4].Variable: '$.a.b' is not supported: only a top-level field such as $.approved",
        f"{rule}[5].Variable: 'a' is not supported: only a top-level field such as $.approved",
        f"{rule}[6].Variable: \"$['a']\" is not supported: only a top-level field such as $.approved",
        f'{rule}[6].BooleanEquals: must be true or false, not "yes"',
        f"{rule}[7]: has 2 comparisons (NumericEquals, StringEquals); put them under And, one field each",
        f"{rule}[8]: a rule needs a comparison: {ONLY}",
        f"{rule}[9]: missing Variable: the field to compare, such as $.approved",
        f"{rule}[10]: a rule needs a Next: the name of a state",
        f"{rule}[11].And[1].Variable: '$.a' is compared twice in this rule",
        f"{rule}[12].And[0].And: And inside And is not supported: list every comparison in one And",
        f"{rule}[12].And[1].Next: Next belongs to the rule, not to a comparison inside And",
        f"{rule}[12].And[2]: a comparison must be a JSON object",
        f"{rule}[13].Variable: Variable is not supported next to And: {ONLY}",
        f"{rule}[13].And: must be a non-empty list of comparisons",
        f"{rule}[14]: a rule must be a JSON object",
    ]


def test_a_choice_is_reached_only_through_a_suspend_task() -> None:
    document = machine(
        "C",
        C={"Type": "Choice", "Choices": [{"Variable": "$.a", "StringEquals": "x", "Next": "P"}], "Default": "C"},
        P={"Type": "Pass", "Next": "C"},
        Lone={"Type": "Choice", "Choices": []},
    )
    assert refused(document) == [
        "$.States.Lone.Choices: must be a non-empty list of rules",
        f"$.StartAt: 'C' {CHOICE_ONLY}",
        f"$.States.C.Default: 'C' {CHOICE_ONLY}",
        f"$.States.P.Next: 'C' {CHOICE_ONLY}",
        '$.States.C.Type: a Choice imports only as the choices of a suspend Task (Resource "module:suspend") whose '
        "Next it is, since its input is what the resume brings; no suspend Task leads here",
        '$.States.Lone.Type: a Choice imports only as the choices of a suspend Task (Resource "module:suspend") whose '
        "Next it is, since its input is what the resume brings; no suspend Task leads here",
    ]


def test_an_approval_that_could_wait_forever_and_a_rule_that_never_matches_are_refused() -> None:
    document = machine(
        S={"Type": "Task", "Resource": SUSPEND, "Next": "C"},
        C={
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.ok", "BooleanEquals": True, "Next": "Z"},
                {
                    "And": [{"Variable": "$.ok", "BooleanEquals": True}, {"Variable": "$.n", "NumericEquals": 1}],
                    "Next": "Z",
                },
            ],
        },
        Z={"Type": "Succeed"},
    )
    assert refused(document) == ["$.States.C.Choices[1]: can never match: Choices[0] matches every input it does"]
    document["States"]["C"]["Choices"].pop()
    assert refused(document) == [
        "$.States.S: waits forever for a resume that no rule of Choice 'C' matches: give that Choice a Default, "
        "or this Task TimeoutSeconds with a Catch of States.Timeout"
    ]


def test_names_that_clash_once_renamed_are_refused() -> None:
    document = machine(**{"a b": {"Type": "Succeed"}, "a_b": {"Type": "Succeed"}, "a!b": {"Type": "Succeed"}})
    assert refused(document) == [
        "$.States.a_b: the chart state name 'a_b' (letters, digits, '.', '_', '-') is also 'a b''s; rename one of them",
        "$.States['a!b']: the chart state name 'a_b' (letters, digits, '.', '_', '-') is also 'a b''s; rename one "
        "of them",
    ]


# -- the property ----------------------------------------------------------------------------

NAMES = ["Start", "wait here", "ask-1", "null", "true", "Done", "é", "2nd.step", "_x"]


@st.composite
def documents(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, tuple[Func | None, set[str]]]]:
    """A document of supported constructs, and per chart state: its func and the states it may lead to."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True))
    states: dict[str, Any] = {}
    expected: dict[str, tuple[Func | None, set[str]]] = {}
    for i, name in enumerate(names):
        later = names[i + 1 :]  # time states only lead forward: a loop of them may be refused
        kinds = ["Succeed", "Fail", "PassEnd", "Suspend"] + (["Pass", "Seconds", "Timestamp"] if later else [])
        kind = draw(st.sampled_from(kinds))
        if kind in ("Pass", "Seconds", "Timestamp"):
            target = draw(st.sampled_from(later))
            states[name] = {
                "Pass": {"Type": "Pass"},
                "Seconds": {"Type": "Wait", "Seconds": draw(st.integers(1, 10**8))},
                "Timestamp": {"Type": "Wait", "Timestamp": "2030-06-01T00:00:00Z"},
            }[kind] | {"Next": target}
            expected[_chart_name(name)] = (Func.TIME, {target})
        elif kind == "Suspend":
            states[name], led = draw(suspends(name, names, states))
            expected[_chart_name(name)] = (Func.APPROVAL, set(led))
        else:
            states[name] = {"Type": "Pass", "End": True} if kind == "PassEnd" else {"Type": kind}
            expected[_chart_name(name)] = (None, set())
    expected = {name: (func, {_chart_name(n) for n in led}) for name, (func, led) in expected.items()}
    return {"StartAt": names[0], "States": states}, expected


def _chart_name(name: str) -> str:
    return name if name not in ("wait here", "é", "_x") else {"wait here": "wait_here", "é": "s_", "_x": "s_x"}[name]


FIELDS = st.sampled_from(["approved", "who", "n"])
VALUES = {
    "approved": ("BooleanEquals", st.booleans()),
    "who": ("StringEquals", st.sampled_from(["ann", "true", "1", ""])),
    "n": ("NumericEquals", st.integers(-3, 3) | st.floats(-1e6, 1e6, allow_nan=False)),
}


@st.composite
def suspends(draw: st.DrawFn, name: str, names: list[str], states: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A suspend Task (and maybe its Choice, added to `states`), and every state it may lead to."""
    task: dict[str, Any] = {"Type": "Task", "Resource": SUSPEND}
    led: list[str] = []
    timeout = draw(st.booleans())
    if timeout:
        catch = draw(st.sampled_from(names))
        task |= {
            "TimeoutSeconds": draw(st.integers(1, 10**6)),
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": catch}],
        }
    if draw(st.booleans()):
        choice = f"Decide {name}"
        rules = []
        for step in range(draw(st.integers(1, 3))):  # each rule asks for its own step: none shadows another
            extra = draw(st.lists(FIELDS, unique=True, max_size=2))
            comparisons = [{"Variable": "$.step", "NumericEquals": step}]
            for field in extra:
                op, values = VALUES[field]
                comparisons.append({"Variable": f"$.{field}", op: draw(values)})
            target = draw(st.sampled_from(names))
            rule = {"And": comparisons} if len(comparisons) > 1 else comparisons[0]
            rules.append(rule | {"Next": target})
            led.append(target)
        states[choice] = {"Type": "Choice", "Choices": rules}
        if not timeout or draw(st.booleans()):
            states[choice]["Default"] = draw(st.sampled_from(names))
            led.append(states[choice]["Default"])
        task["Next"] = choice
    else:
        task["Next"] = draw(st.sampled_from(names))
        led.append(task["Next"])
    if timeout:
        led.append(catch)
    return task, led


@settings(max_examples=200, deadline=None)
@given(documents())
def test_any_document_of_supported_constructs_imports_as_a_chart_that_parses_and_corresponds(
    drawn: tuple[dict[str, Any], dict[str, tuple[Func | None, set[str]]]],
) -> None:
    document, expected = drawn
    _, chart = imported(document)
    assert chart.initial == _chart_name(document["StartAt"])
    assert {s.name: (s.func, set(s.successors())) for s in chart.states} == expected
    for asl_name, body in document["States"].items():
        approval = state(chart, _chart_name(asl_name)).approval if body.get("Resource") == SUSPEND else None
        choice = document["States"].get(body.get("Next")) if approval else None
        if choice is not None and choice["Type"] == "Choice":
            assert len(approval.choices) == len(choice["Choices"])
            for made, rule in zip(approval.choices, choice["Choices"], strict=True):
                read = rule.get("And", [rule])
                wanted = [(c["Variable"][2:], next(v for k, v in c.items() if k.endswith("Equals"))) for c in read]
                assert list(made.when) == wanted and all(
                    type(a) is type(b) for (_, a), (_, b) in zip(made.when, wanted, strict=True)
                )
