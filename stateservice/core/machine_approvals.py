"""Approval states of configurations (issue #16): a state given as an object, read and checked by its path.

Pure: no I/O. A configuration's `states` may hold, beside names, objects such as
`{"name": "review", "type": "approval", "choices": [{"when": {...}, "next": "S"}], "default": "S",
"timeout": {"after": "1h", "next": "S"}, "notify": "https://..."}`. `read_state` reads one into an
`ApprovalState` (its problems are findings at `states.I...`); `check` resolves the next states once
every state is known and applies the rules charts' approval states follow (`core/approvals.problems`).
What a resume picks is `core/approvals.pick`, the same as for charts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stateservice.core.approvals import Approval, Choice, Scalar, Timeout, problems
from stateservice.core.chart import STATE_NAME
from stateservice.core.parse_approval import notify_problem
from stateservice.core.timing import parse_duration

Path = tuple[str | int, ...]
KEYS = frozenset({"name", "type", "choices", "default", "timeout", "notify"})
_CHOICE_PREFIX = re.compile(r"choices\[(\d+)\]")  # how core/approvals.problems names a choice


@dataclass(frozen=True, slots=True)
class ApprovalState:
    """An approval state of a configuration; `after` is the timeout's duration as written (shown as posted)."""

    name: str
    approval: Approval
    after: str | None = None

    def document(self) -> dict[str, Any]:
        """The state as POSTed."""
        out: dict[str, Any] = {"name": self.name, "type": "approval"}
        if self.approval.choices:
            out["choices"] = [{"when": dict(c.when), "next": c.next} for c in self.approval.choices]
        if self.approval.default is not None:
            out["default"] = self.approval.default
        if self.approval.timeout is not None:
            out["timeout"] = {"after": self.after, "next": self.approval.timeout.next}
        if self.approval.notify is not None:
            out["notify"] = self.approval.notify
        return out


@dataclass(frozen=True, slots=True)
class Found:
    """One problem at `path` (core/machines.py turns these into its Findings)."""

    path: Path
    message: str


@dataclass(frozen=True, slots=True)
class Read:
    """What `read_state` made of a state's object: the state (None when a key is unusable), the problems found
    so far, and the names of the next states by their paths (resolved by `check` once every state is known)."""

    state: ApprovalState | None
    found: list[Found]
    refs: list[tuple[Path, str]]


def read_state(value: Mapping[str, Any], path: Path) -> Read:
    """An approval state's object, its next states not yet resolved."""
    found: list[Found] = []
    refs: list[tuple[Path, str]] = []
    for key in value:
        if key not in KEYS:
            found.append(Found((*path, str(key)), f"unknown key; expected {', '.join(sorted(KEYS))}"))
    name = value.get("name")
    if not isinstance(name, str) or not STATE_NAME.fullmatch(name):
        found.append(Found((*path, "name"), f"{name!r} is not a state name: letters, digits, '.', '_', '-'"))
    if value.get("type") != "approval":
        found.append(Found((*path, "type"), f"{value.get('type')!r}: a state given as an object has type approval"))
    choices = _choices(value.get("choices", []), (*path, "choices"), found, refs)
    default = _name(value["default"], (*path, "default"), found, refs) if "default" in value else None
    timeout, after = _timeout(value["timeout"], (*path, "timeout"), found, refs) if "timeout" in value else (None, None)
    notify = value.get("notify")
    problem = notify_problem(notify) if isinstance(notify, str) else "must be an http:// or https:// URL"
    if notify is not None and problem is not None:
        found.append(Found((*path, "notify"), problem))
    if found:
        return Read(None, found, refs)
    assert isinstance(name, str) and choices is not None
    return Read(ApprovalState(name, Approval(choices, default, timeout, notify), after), found, refs)


def check(read: Read, states: Sequence[str], path: Path) -> list[Found]:
    """What is wrong with a state now that every state is known: unknown next states, then (for a state read
    whole) the approval rules."""
    known = set(states)
    found = [Found(where, _unknown(name, states)) for where, name in read.refs if name not in known]
    if found or read.state is None:
        return found
    for message in problems(read.state.approval, states):
        where = _CHOICE_PREFIX.match(message)
        found.append(Found((*path, "choices", int(where.group(1))) if where else path, message))
    return found


def _unknown(name: str, states: Sequence[str]) -> str:
    return f"unknown state {name!r}; the states are {', '.join(states)}"


def _name(value: Any, path: Path, found: list[Found], refs: list[tuple[Path, str]]) -> str | None:
    if isinstance(value, str) and STATE_NAME.fullmatch(value):
        refs.append((path, value))
        return value
    found.append(Found(path, f"{value!r} is not a state name"))
    return None


def _choices(value: Any, path: Path, found: list[Found], refs: list[tuple[Path, str]]) -> tuple[Choice, ...] | None:
    if not isinstance(value, list):
        found.append(Found(path, "must be a list of {when: {FIELD: VALUE}, next: STATE}"))
        return None
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping) or set(item) != {"when", "next"}:
            found.append(Found((*path, i), "a choice is {when: {FIELD: VALUE}, next: STATE}"))
            continue
        target = _name(item["next"], (*path, i, "next"), found, refs)
        when = _when(item["when"], (*path, i, "when"), found)
        if target is not None and when is not None:
            out.append(Choice(when, target))
    return tuple(out) if len(out) == len(value) else None


def _when(value: Any, path: Path, found: list[Found]) -> tuple[tuple[str, Scalar], ...] | None:
    if not isinstance(value, Mapping):
        found.append(Found(path, "must be a mapping of input fields to the values they must equal"))
        return None
    bad = [k for k, v in value.items() if not isinstance(v, str | int | float | bool) and v is not None]
    for key in bad:
        found.append(Found((*path, str(key)), "must be a single value (text, number, true, false or null)"))
    # a YAML file's 1e400 reads as infinity, which no JSON resume can send (and orjson would store as null)
    huge = [k for k, v in value.items() if isinstance(v, float) and not math.isfinite(v)]
    for key in huge:
        found.append(Found((*path, str(key)), "is too large for a number; quote it if it is text"))
    bad += huge
    return None if bad else tuple((str(k), v) for k, v in value.items())


def _timeout(
    value: Any, path: Path, found: list[Found], refs: list[tuple[Path, str]]
) -> tuple[Timeout | None, str | None]:
    if not isinstance(value, Mapping) or set(value) != {"after", "next"}:
        found.append(Found(path, "timeout is {after: DURATION, next: STATE}"))
        return None, None
    target = _name(value["next"], (*path, "next"), found, refs)
    after = value["after"]
    try:
        duration = parse_duration(after) if isinstance(after, str) else None
    except ValueError as exc:
        found.append(Found((*path, "after"), str(exc)))
        return None, None
    if duration is None:
        found.append(Found((*path, "after"), f"{after!r} is not a duration such as 90s, 10m, 2h, 1d"))
        return None, None
    return (Timeout(duration, target), after) if target is not None else (None, None)
