"""parse_approval.py through parse(): a `func: approval` state becomes an Approval, or exact `path:line: message`s."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stateservice.core.parse as parse_module
from stateservice.core.approvals import Approval, Choice, Timeout, pick
from stateservice.core.chart import Func, State
from stateservice.core.parse import parse
from tests.support.charts import text as chart
from tests.unit.core.test_parse import NOT_A_DURATION, messages


def ask(keys: str, *, after: str = "") -> str:
    """A chart starting in approval state `ask` (line 3) whose keys are `keys` (from line 5), then final `go` and
    `stop`, then `after` (states, indented as in a test)."""
    body = "".join(f"    {line}\n" for line in chart(keys).strip("\n").splitlines())
    tail = chart(after) if after else ""
    return (
        "current_state: ask\nstates:\n  - name: ask\n    func: approval\n"
        + body
        + "  - name: go\n  - name: stop\n"
        + tail
    )


def approval_of(text: str, state: str = "ask") -> Approval:
    found = parse(text, "x.yaml").unwrap().state(state)
    assert found is not None and found.approval is not None
    return found.approval


@pytest.fixture(params=["libyaml", "pure"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """parse composes with libyaml when PyYAML has it; the pure loader is what it falls back to. Both must agree."""
    if request.param == "pure":
        monkeypatch.setattr(parse_module, "_FastLoader", parse_module._Loader)
    return str(request.param)


# -- good approval states --------------------------------------------------------------------


def test_every_key_of_an_approval_state_is_read() -> None:
    text = ask(
        """
        choices:
          - when: {approved: true, ticket: T-1}
            next: go
          - {when: {approved: false}, next: stop}
        default: stop
        timeout: {after: 2h, next: stop}
        notify: https://hooks.example.com/approve
        """
    )
    result = parse(text, "x.yaml")

    assert result.problems == []
    assert result.unwrap().states[0] == State(
        "ask",
        Func.APPROVAL,
        line=3,
        approval=Approval(
            (Choice((("approved", True), ("ticket", "T-1")), "go"), Choice((("approved", False),), "stop")),
            default="stop",
            timeout=Timeout(timedelta(hours=2), "stop"),
            notify="https://hooks.example.com/approve",
        ),
    )


def test_a_timeout_alone_is_enough_and_next_states_may_be_defined_later() -> None:
    text = """
        current_state: ask
        states:
          - name: ask
            func: approval
            choices: [{when: {ok: 1}, next: later}]
            timeout: {after: PT30M, next: late}
          - name: later
          - name: late
        """
    made = approval_of(chart(text))

    assert made == Approval((Choice((("ok", 1),), "later"),), None, Timeout(timedelta(minutes=30), "late"))
    assert parse(chart(text), "x.yaml").problems == []


def test_a_default_alone_is_an_approval_without_choices() -> None:
    # "approve to continue": every resume goes to the default
    assert approval_of(ask("default: go")) == Approval((), "go")


def test_an_approval_state_may_have_windows_and_blackouts() -> None:
    text = ask(
        """
        default: go
        windows: [{days: [mon], from: "09:00", to: "10:00"}]
        blackouts: [2030-12-24]
        """,
        after="",
    )
    result = parse(text, "x.yaml")

    assert [p.warning for p in result.problems] == [True]  # `stop` is unreachable; nothing else
    ask_state = result.unwrap().state("ask")
    assert ask_state is not None and ask_state.rollout.timed


# A plain value is what json.loads makes of it when it is a JSON number, true, false or null; anything else, and
# anything quoted, is the text written. YAML 1.1 reads several of these otherwise (in the comments): a resume
# sending what the chart shows would then match nothing.
WHEN_VALUES = [
    ("true", True),
    ("false", False),
    ("null", None),
    ("1", 1),
    ("-1", -1),
    ("-3", -3),
    ("0", 0),
    ("2.5", 2.5),
    ("1.5", 1.5),
    ("-0.0", -0.0),
    ("1e3", 1000.0),  # YAML 1.1: the text "1e3"
    ("1E3", 1000.0),
    ("2.5e-1", 0.25),
    ("1.0e+16", 1e16),
    ("12345678901234567890", 12345678901234567890),
    ("12:30", "12:30"),  # YAML 1.1: 750, base 60
    ("0x10", "0x10"),  # YAML 1.1: 16
    ("010", "010"),  # YAML 1.1: 8, octal
    ("0o17", "0o17"),
    ("0b101", "0b101"),  # YAML 1.1: 5
    ("1_000", "1_000"),  # YAML 1.1: 1000
    ("+1", "+1"),  # YAML 1.1: 1
    (".5", ".5"),  # YAML 1.1: 0.5
    ("1.", "1."),  # YAML 1.1: 1.0
    (".nan", ".nan"),  # YAML 1.1: NaN, which equals nothing
    (".inf", ".inf"),  # YAML 1.1: infinity, which no JSON resume can send
    ("-.inf", "-.inf"),
    ("~", "~"),  # YAML 1.1: null (validate warns: see below)
    ("Null", "Null"),
    ('"1"', "1"),
    ("'1e3'", "1e3"),
    ("'true'", "true"),
    ('"null"', "null"),
    ("'12:30'", "12:30"),
    ("yes", "yes"),
    ("no", "no"),
    ("on", "on"),
    ("off", "off"),
    ("True", "True"),
    ("FALSE", "FALSE"),
    ("2030-01-01", "2030-01-01"),
    ("T-1", "T-1"),
]


def when_value(written: str) -> Any:
    made = approval_of(ask(f"choices: [{{when: {{field: {written}}}, next: go}}]\ndefault: stop"))
    ((field, read),) = made.choices[0].when
    assert field == "field"
    return read


@pytest.mark.parametrize(("written", "value"), WHEN_VALUES)
@pytest.mark.usefixtures("loader")
def test_when_values_are_typed_as_json_would_read_them(written: str, value: Any) -> None:
    read = when_value(written)

    assert read == value and type(read) is type(value)
    # a resume sending the JSON value picks the choice
    made = approval_of(ask(f"choices: [{{when: {{v: {written}}}, next: go}}]\ndefault: stop"))
    assert pick(made, {"v": value}) == "go"


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False)))
def test_any_json_number_true_false_or_null_written_plainly_reads_back_as_itself(value: Any) -> None:
    written = json.dumps(value)
    for fast in (parse_module._FastLoader, parse_module._Loader):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(parse_module, "_FastLoader", fast)
            read = when_value(written)
        assert repr(read) == repr(value), written  # the type too, and -0.0's sign


@given(st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), max_size=20))
def test_any_text_written_as_json_reads_back_as_itself(value: str) -> None:
    assert when_value(json.dumps(value, ensure_ascii=False)) == value


@pytest.mark.parametrize("written", ["~", "Null", "NULL"])
@pytest.mark.usefixtures("loader")
def test_a_yaml_null_that_json_would_not_read_is_text_with_a_warning(written: str) -> None:
    text = ask(f"choices: [{{when: {{who: {written}}}, next: go}}]\ndefault: stop")

    assert messages(text) == [
        f"x.yaml:5: warning: state 'ask': choices[0]: when.who is the text {written!r}, as JSON would read it: "
        "write null for null or quote it"
    ]
    assert approval_of(text).choices[0].when == (("who", written),)


@pytest.mark.usefixtures("loader")
def test_an_empty_when_value_is_the_empty_text_with_a_warning() -> None:
    text = ask("choices:\n  - when: {who: }\n    next: go\ndefault: stop")

    assert messages(text) == [
        "x.yaml:6: warning: state 'ask': choices[0]: when.who is the text '', as JSON would read it: "
        "write null for null or quote it"
    ]
    assert approval_of(text).choices[0].when == (("who", ""),)


@pytest.mark.parametrize("written", ["1e400", "-1e400", "9" * 5000])  # 5000 digits: past int()'s limit too
@pytest.mark.usefixtures("loader")
def test_a_number_too_large_to_be_finite_is_refused(written: str) -> None:
    # JSON reads it as infinity, which no resume can send: the choice could never match
    text = ask(f"choices: [{{when: {{n: {written}}}, next: go}}]\ndefault: stop")

    assert messages(text) == [
        f"x.yaml:5: state 'ask': choices[0]: when.n: {written} is too large for a number; quote it if it is text"
    ]
    assert when_value(f"'{written}'") == written


@pytest.mark.usefixtures("loader")
def test_true_and_one_are_different_choices_not_a_shadowed_one() -> None:
    made = approval_of(ask("choices:\n  - {when: {a: 1}, next: go}\n  - {when: {a: true}, next: stop}\ndefault: stop"))

    assert made.choices == (Choice((("a", 1),), "go"), Choice((("a", True),), "stop"))


# -- errors, each at its line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            "choices: [{when: {a: 1}, next: nowhere}]\ndefault: stop",
            ["x.yaml:5: target 'nowhere' of state 'ask' is not a state of this chart"],
        ),
        ("default: nope", ["x.yaml:5: target 'nope' of state 'ask' is not a state of this chart"]),
        (
            "default: go\ntimeout: {after: 1h, next: nada}",
            ["x.yaml:6: target 'nada' of state 'ask' is not a state of this chart"],
        ),
        (
            "choices:\n  - {when: {a: 1}, next: x1}\n  - {when: {a: 2}, next: go}\ndefault: x2\ntimeout:\n  after: 1h\n"
            "  next: x3",
            [
                "x.yaml:6: target 'x1' of state 'ask' is not a state of this chart",
                "x.yaml:8: target 'x2' of state 'ask' is not a state of this chart",
                "x.yaml:11: target 'x3' of state 'ask' is not a state of this chart",
            ],
        ),
    ],
)
def test_unknown_next_states_are_named_at_their_line(keys: str, expected: list[str]) -> None:
    assert messages(ask(keys)) == expected


def test_a_shadowed_choice_names_both_lines() -> None:
    text = ask(
        """
        choices:
          - when: {approved: true}
            next: go
          - {when: {approved: false}, next: stop}
          - when: {ticket: T-1, approved: true}
            next: stop
        default: stop
        """
    )
    assert messages(text) == [
        "x.yaml:9: state 'ask': choices[2] can never match: choices[0] (line 6) matches every input it does"
    ]


def test_an_equal_number_shadows_across_int_and_float() -> None:
    text = ask("choices:\n  - {when: {a: 1.0}, next: go}\n  - {when: {a: 1}, next: stop}\ndefault: stop")
    assert messages(text) == [
        "x.yaml:7: state 'ask': choices[1] can never match: choices[0] (line 6) matches every input it does"
    ]


def test_the_same_conditions_twice_shadow() -> None:
    text = ask("choices:\n  - {when: {a: x, b: y}, next: go}\n  - {when: {b: y, a: x}, next: stop}\ndefault: stop")
    assert messages(text) == [
        "x.yaml:7: state 'ask': choices[1] can never match: choices[0] (line 6) matches every input it does"
    ]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            "choices: [{when: {}, next: go}]\ndefault: stop",
            "x.yaml:5: state 'ask': choices[0]: `when` is empty, so it matches every input; use `default:` instead",
        ),
        (
            "choices: [{when: {a: [1]}, next: go}]\ndefault: stop",
            "x.yaml:5: state 'ask': choices[0]: when.a must be a single value (text, number, true, false or null)",
        ),
        (
            "choices: [{when: {a: {b: 1}}, next: go}]\ndefault: stop",
            "x.yaml:5: state 'ask': choices[0]: when.a must be a single value (text, number, true, false or null)",
        ),
        (
            "choices: [{when: approved, next: go}]\ndefault: stop",
            "x.yaml:5: `when` of state 'ask': choices[0] must be a mapping of keys to values",
        ),
        (
            "choices: [{when: {a: 1, a: 2}, next: go}]\ndefault: stop",
            "x.yaml:5: duplicate key 'a' in `when` of state 'ask': choices[0]",
        ),
        ("choices: [go]\ndefault: stop", "x.yaml:5: state 'ask': choices[0] must be a mapping of keys to values"),
        (
            "choices: [{when: {a: 1}, next: go, then: stop}]\ndefault: stop",
            "x.yaml:5: unknown key 'then' in state 'ask': choices[0]; did you mean 'when'?",
        ),
        (
            "choices: [{when: {a: 1}, next: 'bad name!'}]\ndefault: stop",
            "x.yaml:5: state 'ask': choices[0]: next 'bad name!' is not a valid state name (letters, digits, '.',"
            " '_', '-'; starting with a letter or digit; at most 128)",
        ),
        (
            "choices: []\ndefault: stop",
            "x.yaml:5: state 'ask': `choices` must be a non-empty list of {when: {FIELD: VALUE}, next: STATE}",
        ),
        (
            "choices: {a: 1}\ndefault: stop",
            "x.yaml:5: state 'ask': `choices` must be a non-empty list of {when: {FIELD: VALUE}, next: STATE}",
        ),
        ("default: [go]", "x.yaml:5: state 'ask': default must be a single value"),
        ("default: go\nnotify: null", "x.yaml:6: state 'ask': notify must be a single value"),
    ],
)
def test_a_bad_choice_default_or_notify_value(keys: str, expected: str) -> None:
    assert messages(ask(keys)) == [expected]


def test_a_choice_missing_when_or_next() -> None:
    text = ask("choices:\n  - {when: {a: 1}}\n  - {next: go}\ndefault: stop")
    assert messages(text) == [
        "x.yaml:6: state 'ask': choices[0] is missing `next`",
        "x.yaml:7: state 'ask': choices[1] is missing `when`",
    ]


def test_a_state_that_could_wait_forever_is_an_error_at_the_state() -> None:
    # neither default nor timeout: an input no choice matches would leave the chart here for good
    assert messages(ask("choices: [{when: {a: 1}, next: go}]")) == [
        "x.yaml:3: state 'ask': an approval state needs `default` or `timeout`: else a resume no choice matches "
        "would wait forever"
    ]
    assert messages(ask("")) == [
        "x.yaml:3: state 'ask': an approval state needs `default` or `timeout`: else a resume no choice matches "
        "would wait forever"
    ]


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        ("{after: soon, next: stop}", f"x.yaml:5: state 'ask': timeout.after: 'soon' {NOT_A_DURATION}"),
        ("{after: 10, next: stop}", f"x.yaml:5: state 'ask': timeout.after: '10' {NOT_A_DURATION}"),
        ("{after: 0s, next: stop}", "x.yaml:5: state 'ask': timeout.after: '0s' is not a positive duration"),
        ("{after: [1h], next: stop}", "x.yaml:5: state 'ask': timeout.after must be a single value"),
        ("{next: stop}", "x.yaml:5: `timeout` of state 'ask' is missing `after`"),
        ("{after: 1h}", "x.yaml:5: `timeout` of state 'ask' is missing `next`"),
        ("1h", "x.yaml:5: `timeout` of state 'ask' must be a mapping of keys to values"),
        (
            "{after: 1h, next: stop, then: go}",
            "x.yaml:5: unknown key 'then' in `timeout` of state 'ask' (allowed: after, next)",
        ),
    ],
)
def test_a_bad_timeout(timeout: str, expected: str) -> None:
    assert messages(ask(f"timeout: {timeout}\ndefault: go")) == [expected]


WANTED = "notify must be an http:// or https:// URL with a host, not one starting"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hooks.example.com/x?token=SECRET", f"{WANTED} 'ftp://ho'"),
        ("hooks.example.com/x", f"{WANTED} 'hooks.ex'"),
        ("http:///x", f"{WANTED} 'http:///'"),
        ("'1'", f"{WANTED} '1'"),
        (
            "http://hooks.example.com:abc/",
            "notify is not a URL (Port could not be cast to integer value as 'abc')",
        ),
    ],
)
def test_notify_must_be_an_http_url_with_a_host(url: str, problem: str) -> None:
    assert messages(ask(f"default: go\nnotify: {url}")) == [f"x.yaml:6: state 'ask': {problem}"]


@pytest.mark.parametrize("url", ["http://localhost:8080/hook", "https://hooks.example.com/approve?team=ops"])
def test_http_and_https_notify_addresses_are_kept(url: str) -> None:
    assert approval_of(ask(f"default: go\nnotify: {url}")).notify == url


def test_current_and_target_on_an_approval_state() -> None:
    text = ask(
        """
        current: {key: hosts, value: 0}
        target: {name: go, when: {key: hosts, value: 1}}
        default: stop
        """
    )
    assert messages(text) == [
        "x.yaml:5: state 'ask': func: approval takes no `current` (it moves by `choices`, `default`, `timeout`)",
        "x.yaml:6: state 'ask': func: approval takes no `target` (it moves by `choices`, `default`, `timeout`)",
    ]


def test_approval_keys_on_other_states() -> None:
    text = """
        current_state: a
        states:
          - name: a
            func: increment
            current: {key: n, value: 0}
            target: {name: b, when: {key: n, value: 1}}
            choices: [{when: {x: 1}, next: c}]
          - name: b
            func: time
            target: {name: c, when: {key: elapsed, value: 1h}}
            default: c
            timeout: {after: 1h, next: c}
          - name: c
            notify: https://hooks.example.com/
        """
    assert messages(text) == [
        "x.yaml:7: state 'a': `choices` belongs to approval states (func: approval)",
        "x.yaml:11: state 'b': `default` belongs to approval states (func: approval)",
        "x.yaml:12: state 'b': `timeout` belongs to approval states (func: approval)",
        "x.yaml:14: state 'c': `notify` belongs to approval states (func: approval)",
    ]


def test_counted_only_rollout_keys_on_an_approval_state() -> None:
    text = ask("default: go\nconcurrency: 2\nslot_ttl: 1m\nmax_failures: 1")
    assert messages(text) == [
        "x.yaml:6: state 'ask': `concurrency` applies to increment states (where hosts report), not an approval state",
        "x.yaml:7: state 'ask': `slot_ttl` applies to increment states (where hosts report), not an approval state",
        "x.yaml:8: state 'ask': `max_failures` applies to increment states (where hosts report), not an approval state",
    ]


def test_every_problem_of_an_approval_state_is_reported_at_once() -> None:
    text = ask(
        """
        target: {name: go}
        choices:
          - {when: {a: 1}, next: go}
          - {when: {a: 1}, next: stop}
        default: nowhere
        timeout: {after: never, next: stop}
        notify: mailto:ops@example.com
        """
    )
    assert messages(text) == [
        "x.yaml:5: state 'ask': func: approval takes no `target` (it moves by `choices`, `default`, `timeout`)",
        "x.yaml:8: state 'ask': choices[1] can never match: choices[0] (line 7) matches every input it does",
        "x.yaml:9: target 'nowhere' of state 'ask' is not a state of this chart",
        f"x.yaml:10: state 'ask': timeout.after: 'never' {NOT_A_DURATION}",
        f"x.yaml:11: state 'ask': {WANTED} 'mailto:o'",
    ]


# -- reachability ----------------------------------------------------------------------------


def test_states_reached_only_through_an_approval_are_reachable() -> None:
    text = """
        current_state: ask
        states:
          - name: ask
            func: approval
            choices: [{when: {ok: true}, next: by_choice}]
            default: by_default
            timeout: {after: 1d, next: by_timeout}
          - name: by_choice
            func: time
            target: {name: after_choice, when: {key: elapsed, value: 1h}}
          - name: after_choice
          - name: by_default
          - name: by_timeout
        """
    assert messages(text) == []


def test_an_approval_reached_from_a_time_state_leads_on() -> None:
    text = """
        current_state: wait
        states:
          - name: wait
            func: time
            target: {name: ask, when: {key: elapsed, value: 1h}}
          - name: ask
            func: approval
            choices: [{when: {ok: true}, next: done}]
            timeout: {after: 1d, next: wait}
          - name: done
          - name: orphan
        """
    assert messages(text) == ["x.yaml:11: warning: state 'orphan' is unreachable from 'wait'"]


def test_an_approval_state_nobody_leads_to_is_unreachable_and_so_is_where_only_it_leads() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: ask
            func: approval
            default: b
          - name: b
        """
    assert messages(text) == [
        "x.yaml:1: warning: the initial state 'a' is final: this chart can never move",
        "x.yaml:4: warning: state 'ask' is unreachable from 'a'",
        "x.yaml:7: warning: state 'b' is unreachable from 'a'",
    ]
