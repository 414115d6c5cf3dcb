"""Failure budgets: how many failed hosts halt a state (`max_failures: N` or `max_failures: P%`).

Pure. A percentage is of the state's target count, rounded up, and never less than one: a
budget that rounds to zero would halt a rollout before anything had failed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
BUDGET_HELP = "a whole number of hosts such as 3, or a percentage of the target such as 5%"


@dataclass(frozen=True, slots=True)
class Budget:
    """A failure budget: a count of hosts, or a percentage (0 < percent <= 100) of the target."""

    count: int | None = None
    percent: float | None = None

    def __post_init__(self) -> None:
        assert (self.count is None) != (self.percent is None), self

    def limit(self, target: int) -> int:
        """The number of failures that halts a state whose target is `target`."""
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return max(1, math.ceil(self.percent * target / 100 - 1e-9))  # 1e-9: 10% of 30 is 3, not 4

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


def parse_budget(value: object) -> Budget:
    """`3` (an int) or `"5%"`. Raises ValueError saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"max_failures must be {BUDGET_HELP}, not {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"max_failures must be at least 1 (got {value}); leave it out for no budget")
        return Budget(count=value)
    match = _PERCENT.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"max_failures must be {BUDGET_HELP}, not {value!r}")
    percent = float(match.group(1))
    if not 0 < percent <= 100:
        raise ValueError(f"max_failures {value!r} must be a percentage above 0% and at most 100%")
    return Budget(percent=percent)


def exhausted(budget: Budget | None, target: int, failures: int) -> bool:
    """Whether `failures` failed hosts in a state of target `target` reach its budget (never without one)."""
    return budget is not None and failures >= budget.limit(target)
