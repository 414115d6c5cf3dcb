"""core/approvals.py: a resume picks exactly one state (or none), first match wins; validate's findings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from stateservice.core.approvals import Approval, Choice, Timeout, pick, problems, same, shadowed

STATES = ["wait", "go", "stop", "later"]
FIELDS = st.sampled_from(["approved", "ticket", "by"])
VALUES = st.one_of(st.booleans(), st.integers(-2, 2), st.sampled_from(["yes", "no", ""]), st.none())
WHEN = st.dictionaries(FIELDS, VALUES, min_size=1, max_size=3).map(lambda d: tuple(sorted(d.items())))
CHOICES = st.lists(st.builds(Choice, WHEN, st.sampled_from(STATES)), max_size=5).map(tuple)
INPUTS = st.dictionaries(FIELDS, VALUES, max_size=3)


def approval(*choices: Choice, default: str | None = "stop", timeout: Timeout | None = None) -> Approval:
    return Approval(tuple(choices), default, timeout)


def test_the_first_matching_choice_wins_else_the_default_else_none() -> None:
    ok = Choice((("approved", True),), "go")
    ticket = Choice((("approved", True), ("ticket", "T-1")), "later")

    assert pick(approval(ok, ticket), {"approved": True, "ticket": "T-1"}) == "go"
    assert pick(approval(ticket, ok), {"approved": True, "ticket": "T-1"}) == "later"
    assert pick(approval(ok), {"approved": False}) == "stop"
    assert pick(approval(ok, default=None), {}) is None


def test_json_equality_keeps_booleans_apart_from_numbers() -> None:
    assert not same(True, 1) and not same(0, False) and same(True, True) and same(1, 1.0)
    assert pick(approval(Choice((("approved", True),), "go"), default=None), {"approved": 1}) is None


@given(CHOICES, st.one_of(st.none(), st.sampled_from(STATES)), INPUTS)
def test_a_resume_applies_exactly_one_choice_the_first_that_matches(
    choices: tuple[Choice, ...], default: str | None, given_input: dict[str, Any]
) -> None:
    picked = pick(Approval(choices, default), given_input)
    matching = [
        i for i, c in enumerate(choices) if all(f in given_input and same(given_input[f], v) for f, v in c.when)
    ]

    if matching:
        assert picked == choices[matching[0]].next
    else:
        assert picked == default


@given(CHOICES, st.lists(INPUTS, max_size=20))
def test_a_shadowed_choice_is_never_the_first_match(choices: tuple[Choice, ...], inputs: list[dict[str, Any]]) -> None:
    never = {i for i, _ in shadowed(choices)}
    for given_input in inputs:
        first = next((i for i, c in enumerate(choices) if c.matches(given_input)), None)
        assert first not in never


def test_shadowing_is_a_subset_of_conditions_not_an_overlap() -> None:
    broad = Choice((("approved", True),), "go")
    narrow = Choice((("approved", True), ("ticket", "T")), "later")
    other = Choice((("approved", False), ("ticket", "T")), "stop")

    assert shadowed((broad, narrow, other)) == [(1, 0)]
    assert shadowed((narrow, broad)) == []


def test_problems_name_unknown_states_dead_choices_and_a_wait_without_end() -> None:
    broad = Choice((("approved", True),), "go")
    narrow = Choice((("approved", True), ("ticket", "T")), "nowhere")
    found = problems(
        Approval((broad, narrow, Choice((), "go")), default=None, timeout=Timeout(timedelta(0), "gone")), STATES
    )

    assert found == [
        "choices[1]: next state 'nowhere' is not a state",
        "choices[2]: `when` is empty: it matches every input (use default: instead)",
        "choices[1] can never match: choices[0] matches every input it does",
        "timeout.next: 'gone' is not a state",
        "timeout.after must be a positive duration",
    ]
    assert problems(Approval((broad,)), STATES) == [
        "an approval state needs `default` or `timeout`: else a resume no choice matches would wait forever"
    ]
    assert problems(Approval((broad,), timeout=Timeout(timedelta(hours=1), "stop")), STATES) == []


def test_targets_are_every_state_a_resume_or_the_timeout_may_reach_once() -> None:
    made = Approval(
        (Choice((("a", 1),), "go"), Choice((("a", 2),), "go")), default="stop", timeout=Timeout(timedelta(1), "later")
    )
    assert made.targets() == ["go", "stop", "later"]
