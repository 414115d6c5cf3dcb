"""Approval states (issue #16): which state a resume's input leads to, and what `validate` says of the choices.

Pure: no I/O, no clock, no randomness. An approval state suspends a chart or an instance until a
person resumes it with a JSON object; `pick` chooses the next state from that input: the first
choice whose every `when` field equals the input's, else the `default`, else none (the resume is
refused and the continuation stays usable). `problems` are what a chart or configuration file
gets told before it is served.

`parse_approval.py` reads them from chart files, `rules.py` applies them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Choice:
    """`when` every field equals the input's (JSON equality: 1 is not true), go to `next`."""

    when: tuple[tuple[str, Scalar], ...]
    next: str

    def matches(self, given: Mapping[str, Any]) -> bool:
        return all(field in given and same(given[field], value) for field, value in self.when)


@dataclass(frozen=True, slots=True)
class Timeout:
    after: timedelta
    next: str


@dataclass(frozen=True, slots=True)
class Approval:
    choices: tuple[Choice, ...]
    default: str | None = None
    timeout: Timeout | None = None
    notify: str | None = None

    def targets(self) -> list[str]:
        """Every state a resume or the timeout may lead to, in order, once each."""
        found = [c.next for c in self.choices]
        found += [s for s in (self.default, self.timeout.next if self.timeout else None) if s is not None]
        return list(dict.fromkeys(found))


def same(a: Any, b: Any) -> bool:
    """JSON equality: a bool equals only a bool (Python's True == 1 would let `approved: 1` pass as true)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return bool(a == b)


def pick(approval: Approval, given: Mapping[str, Any]) -> str | None:
    """The state a resume with `given` leads to: the first matching choice's, else the default; None for neither."""
    for choice in approval.choices:
        if choice.matches(given):
            return choice.next
    return approval.default


def shadowed(choices: Sequence[Choice]) -> list[tuple[int, int]]:
    """(i, j) for each choice i that can never be picked because an earlier choice j matches whenever i does.

    Choice j matches every input choice i matches exactly when j's conditions are a subset of i's
    (a field j asks for with another value than i makes them disjoint, not shadowing).
    """
    found = []
    for i, later in enumerate(choices):
        wanted = dict(later.when)
        for j, earlier in enumerate(choices[:i]):
            if all(field in wanted and same(wanted[field], value) for field, value in earlier.when):
                found.append((i, j))
                break
    return found


def problems(approval: Approval, states: Sequence[str]) -> list[str]:
    """What is wrong with an approval state's choices, default and timeout, given the machine's `states`."""
    found = []
    for i, choice in enumerate(approval.choices):
        if choice.next not in states:
            found.append(f"choices[{i}]: next state {choice.next!r} is not a state")
        if not choice.when:
            found.append(f"choices[{i}]: `when` is empty: it matches every input (use default: instead)")
    for i, j in shadowed(approval.choices):
        if approval.choices[j].when:  # an empty `when` is reported above
            found.append(f"choices[{i}] can never match: choices[{j}] matches every input it does")
    if approval.default is not None and approval.default not in states:
        found.append(f"default: {approval.default!r} is not a state")
    if approval.timeout is not None:
        if approval.timeout.next not in states:
            found.append(f"timeout.next: {approval.timeout.next!r} is not a state")
        if approval.timeout.after <= timedelta(0):
            found.append("timeout.after must be a positive duration")
    if approval.default is None and approval.timeout is None:
        found.append(
            "an approval state needs `default` or `timeout`: else a resume no choice matches would wait forever"
        )
    elif not approval.choices and approval.default is None:
        found.append("an approval state needs `choices` or `default`: else no resume could move it")
    return found
