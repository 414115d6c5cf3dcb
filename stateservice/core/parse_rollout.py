"""A state's rollout keys (`concurrency`, `slot_ttl`, `max_failures`, `windows`, `blackouts`) -> `Rollout`.

Pure, like `parse.py`, whose checker it reports through: every problem becomes a
`file:line: message` at the node it is about, and a state with a bad key is not served.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Protocol

import yaml

from stateservice.core import timing
from stateservice.core.budget import BUDGET_HELP, Budget, parse_budget
from stateservice.core.chart import NO_ROLLOUT, Func, Rollout
from stateservice.core.windows import Window, parse_blackout, parse_window

KEYS = ("concurrency", "slot_ttl", "max_failures", "windows", "blackouts")  # Rollout's fields
COUNTED_ONLY = ("concurrency", "slot_ttl", "max_failures")  # hosts take slots and fail only where they report
MAX_CONCURRENCY = 1_000_000
_INT = "tag:yaml.org,2002:int"
_CONSTRUCTOR = yaml.constructor.SafeConstructor()

Entry = tuple[yaml.Node, yaml.Node]


class Reporter(Protocol):
    """What the chart checker offers: report an error at a node, read a whole number."""

    def error(self, node: yaml.Node | int, message: str) -> None: ...

    def integer(self, entry: Entry, what: str) -> int | None: ...


class _Reported(Exception):
    """A problem with one key, already reported at its node."""


def rollout(checker: Reporter, found: dict[str, Entry], what: str, func: Func | None) -> Rollout | None:
    """The rollout of a state whose keys are `found`; NO_ROLLOUT without any; None when one is wrong (reported)."""
    if not any(key in found for key in KEYS):
        return NO_ROLLOUT
    ok = True
    if func is not Func.INCREMENT:
        for key in (k for k in COUNTED_ONLY if k in found):
            kind = "a final state" if func is None else f"{'an' if func is Func.APPROVAL else 'a'} {func.value} state"
            checker.error(
                found[key][0], f"{what}: `{key}` applies to increment states (where hosts report), not {kind}"
            )
            ok = False
    if "slot_ttl" in found and "concurrency" not in found:
        checker.error(found["slot_ttl"][0], f"{what}: `slot_ttl` needs `concurrency` (it is how long a slot is held)")
        ok = False
    values: dict[str, object] = {}
    for key, read in _READERS.items():  # the keys are Rollout's field names
        if key in found:
            try:
                values[key] = read(checker, found[key], what)
            except _Reported:
                ok = False
    return Rollout(**values) if ok else None  # type: ignore[arg-type]


def _concurrency(checker: Reporter, entry: Entry, what: str) -> int:
    value = checker.integer(entry, f"{what}: concurrency")
    if value is None:
        raise _Reported
    if not 1 <= value <= MAX_CONCURRENCY:
        checker.error(entry[1], f"{what}: concurrency must be from 1 to {MAX_CONCURRENCY:,}, not {value}")
        raise _Reported
    return value


def _slot_ttl(checker: Reporter, entry: Entry, what: str) -> timedelta:
    node = entry[1]
    text = node.value if isinstance(node, yaml.ScalarNode) else None
    try:
        if text is not None:
            return timing.parse_duration(str(text))
    except ValueError:
        pass
    checker.error(node, f"{what}: slot_ttl must be {timing.DURATION_HELP}, not {text!r}")
    raise _Reported


def _max_failures(checker: Reporter, entry: Entry, what: str) -> Budget:
    node = entry[1]
    try:
        if not isinstance(node, yaml.ScalarNode):
            raise ValueError(f"max_failures must be {BUDGET_HELP}")
        return parse_budget(_scalar(node))
    except ValueError as exc:
        checker.error(node, f"{what}: {exc}")
        raise _Reported from None


def _windows(checker: Reporter, entry: Entry, what: str) -> tuple[Window, ...]:
    node = entry[1]
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        checker.error(node, f"{what}: `windows` must be a non-empty list of {{days: [...], from: HH:MM, to: HH:MM}}")
        raise _Reported
    windows: list[Window] = []
    for item in node.value:
        try:
            windows.append(parse_window(_mapping(item)))
        except ValueError as exc:
            checker.error(item, f"{what}: {exc}")
    if len(windows) != len(node.value):
        raise _Reported
    return tuple(windows)


def _blackouts(checker: Reporter, entry: Entry, what: str) -> frozenset[date]:
    node = entry[1]
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        checker.error(node, f"{what}: `blackouts` must be a non-empty list of dates such as 2026-12-24")
        raise _Reported
    days: set[date] = set()
    for item in node.value:
        try:
            days.add(parse_blackout(_scalar(item) if isinstance(item, yaml.ScalarNode) else item))
        except ValueError as exc:
            checker.error(item, f"{what}: {exc}")
            raise _Reported from None
    return frozenset(days)


_READERS: dict[str, Callable[[Reporter, Entry, str], object]] = {
    "concurrency": _concurrency,
    "slot_ttl": _slot_ttl,
    "max_failures": _max_failures,
    "windows": _windows,
    "blackouts": _blackouts,
}


def _scalar(node: yaml.ScalarNode) -> object:
    """A scalar as YAML reads it for our purposes: whole numbers as int, everything else as its text."""
    if node.tag == _INT:
        try:
            value: int = _CONSTRUCTOR.construct_yaml_int(node)
            return value
        except (ValueError, IndexError):
            return node.value
    return node.value


def _mapping(node: yaml.Node) -> dict[str, object]:
    """A window item as plain values (its keys checked by `parse_window`). Raises ValueError if not a mapping."""
    if not isinstance(node, yaml.MappingNode):
        raise ValueError('a window must be a mapping such as {days: [mon], from: "09:00", to: "17:00"}')
    plain: dict[str, object] = {}
    for key, value in node.value:
        if isinstance(value, yaml.SequenceNode):
            plain[str(key.value)] = [_scalar(v) if isinstance(v, yaml.ScalarNode) else v for v in value.value]
        elif isinstance(value, yaml.ScalarNode):
            plain[str(key.value)] = _scalar(value)
        else:
            plain[str(key.value)] = value
    return plain
