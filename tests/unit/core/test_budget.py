"""budget.py: counts and percentages, what is refused, and the halting point as a property."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateservice.core.budget import Budget, exhausted, parse_budget


def test_a_count_halts_at_that_many_failures() -> None:
    budget = parse_budget(2)
    assert budget == Budget(count=2)
    assert not exhausted(budget, 500, 1)
    assert exhausted(budget, 500, 2)
    assert str(budget) == "2"


def test_a_percentage_is_of_the_target_rounded_up_and_at_least_one() -> None:
    assert parse_budget("10%").limit(500) == 50
    assert parse_budget("10%").limit(30) == 3  # not 4: 10% of 30 is exactly 3
    assert parse_budget("10%").limit(31) == 4
    assert parse_budget("1%").limit(5) == 1
    assert parse_budget(" 2.5 % ").limit(100) == 3
    assert str(parse_budget("2.5%")) == "2.5%"


def test_no_budget_never_halts() -> None:
    assert not exhausted(None, 1, 10**6)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (0, "at least 1"),
        (-3, "at least 1"),
        (True, "whole number of hosts"),
        ("three", "whole number of hosts"),
        ("5", "whole number of hosts"),
        (1.5, "whole number of hosts"),
        ("0%", "above 0%"),
        ("150%", "at most 100%"),
    ],
)
def test_bad_budgets_say_what_is_accepted(raw: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_budget(raw)
    assert message in str(caught.value)


@given(st.integers(1, 10_000), st.integers(1, 100), st.integers(0, 10_000))
def test_a_percentage_halts_exactly_when_failures_reach_its_share_of_the_target(
    target: int, percent: int, failures: int
) -> None:
    budget = parse_budget(f"{percent}%")
    limit = max(1, math.ceil(percent * target / 100))  # integers: exact
    assert exhausted(budget, target, failures) == (failures >= limit)
    assert not exhausted(budget, target, limit - 1)


@given(st.integers(1, 10_000), st.integers(1, 10_000))
def test_halting_is_monotonic_in_failures(count: int, failures: int) -> None:
    budget = Budget(count=count)
    assert exhausted(budget, 1, failures) <= exhausted(budget, 1, failures + 1)
