"""An approval state's keys (`choices`, `default`, `timeout`, `notify`) -> `Approval`, with file:line problems.

Pure, like `parse.py`, whose checker it reports through. Next states are resolved by the
checker at the end of the file (they may be defined further down); what can be told from the
state alone is told here: a choice an earlier one always catches, an empty `when`, a state
that could wait forever (no default and no timeout), a notify address that is not http(s).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol
from urllib.parse import urlsplit

import yaml

from stateservice.core import timing
from stateservice.core.approvals import Approval, Choice, Scalar, Timeout, shadowed

KEYS = ("choices", "default", "timeout", "notify")
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_BOOLEANS = {"true": True, "false": False}

Entry = tuple[yaml.Node, yaml.Node]


class Checker(Protocol):
    """What the chart checker offers: report at a node, read a section, a state name, and resolve names later."""

    def error(self, node: yaml.Node | int, message: str) -> None: ...

    def mapping(self, node: yaml.Node, what: str, allowed: tuple[str, ...]) -> dict[str, Entry] | None: ...

    def name(self, entry: Entry, what: str) -> str | None: ...

    def scalar(self, entry: Entry, what: str) -> str | None: ...

    def refer(self, owner: str, target: str, node: yaml.Node) -> None: ...


def approval(checker: Checker, node: yaml.Node, found: dict[str, Entry], owner: str) -> Approval | None:
    """The approval of state `owner` whose keys are `found`; None when something is wrong (reported)."""
    what = f"state {owner!r}"
    for extra in ("current", "target"):
        if extra in found:
            checker.error(
                found[extra][0],
                f"{what}: func: approval takes no `{extra}` (it moves by `choices`, `default`, `timeout`)",
            )
    choices = _choices(checker, found["choices"], what, owner) if "choices" in found else ()
    default = _next(checker, found["default"], f"{what}: default", owner) if "default" in found else None
    timeout = _timeout(checker, found["timeout"], what, owner) if "timeout" in found else None
    notify = _notify(checker, found["notify"], what) if "notify" in found else None
    broken = any(
        value is None for key, value in (("default", default), ("timeout", timeout), ("notify", notify)) if key in found
    )
    if choices is None or broken:
        return None
    if default is None and timeout is None:
        checker.error(
            node,
            f"{what}: an approval state needs `default` or `timeout`: else a resume no choice matches "
            "would wait forever",
        )
        return None
    if not choices and default is None:
        checker.error(node, f"{what}: an approval state needs `choices` or `default`: else no resume could move it")
        return None
    return Approval(choices, default, timeout, notify)


def _choices(checker: Checker, entry: Entry, what: str, owner: str) -> tuple[Choice, ...] | None:
    node = entry[1]
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        checker.error(node, f"{what}: `choices` must be a non-empty list of {{when: {{FIELD: VALUE}}, next: STATE}}")
        return None
    choices: list[Choice | None] = [
        _choice(checker, item, f"{what}: choices[{i}]", owner) for i, item in enumerate(node.value)
    ]
    found = [c for c in choices if c is not None]
    if len(found) != len(choices):
        return None
    for i, j in shadowed(found):
        checker.error(
            node.value[i],
            f"{what}: choices[{i}] can never match: choices[{j}] (line {_line(node.value[j])}) "
            "matches every input it does",
        )
    return None if shadowed(found) else tuple(found)


def _choice(checker: Checker, node: yaml.Node, what: str, owner: str) -> Choice | None:
    found = checker.mapping(node, what, ("when", "next"))
    if found is None:
        return None
    for key in ("when", "next"):
        if key not in found:
            checker.error(node, f"{what} is missing `{key}`")
    if "when" not in found or "next" not in found:
        return None
    target = _next(checker, found["next"], f"{what}: next", owner)
    when = checker.mapping(found["when"][1], f"`when` of {what}", _AnyKey())
    if when is None or target is None:
        return None
    if not when:
        checker.error(found["when"][1], f"{what}: `when` is empty, so it matches every input; use `default:` instead")
        return None
    values: list[tuple[str, Scalar]] = []
    for field, (_, value) in when.items():
        read = _value(value)
        if isinstance(read, _Bad):
            checker.error(value, f"{what}: when.{field} must be a single value (text, number, true, false or null)")
            return None
        values.append((field, read))
    return Choice(tuple(values), target)


class _AnyKey(tuple[str, ...]):
    """An `allowed` that allows every key: `when` names the input's fields, whatever they are."""

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)


class _Bad:
    pass


def scalar(node: yaml.Node) -> tuple[bool, Scalar]:
    """A `when` value as JSON would read it (configuration files use this too): (True, value), or (False, None)
    for a list or a mapping."""
    read = _value(node)
    return (False, None) if isinstance(read, _Bad) else (True, read)


def _value(node: yaml.Node) -> Scalar | _Bad:
    """A `when` value as JSON would read it: numbers, true/false, null, else text."""
    if not isinstance(node, yaml.ScalarNode):
        return _Bad()
    plain = not node.style  # PyYAML says None for a plain scalar, libyaml's composer says ""
    if node.tag == _NULL and plain:
        return None
    if plain and node.value in _BOOLEANS:
        return _BOOLEANS[node.value]
    try:
        if node.tag == _INT:
            whole: int = _CONSTRUCTOR.construct_yaml_int(node)
            return whole
        if node.tag == _FLOAT:
            real: float = _CONSTRUCTOR.construct_yaml_float(node)
            return real
    except (ValueError, IndexError):
        pass
    return str(node.value)


def _next(checker: Checker, entry: Entry, what: str, owner: str) -> str | None:
    name = checker.name(entry, what)
    if name is not None:
        checker.refer(owner, name, entry[1])
    return name


def _timeout(checker: Checker, entry: Entry, what: str, owner: str) -> Timeout | None:
    found = checker.mapping(entry[1], f"`timeout` of {what}", ("after", "next"))
    if found is None:
        return None
    for key in ("after", "next"):
        if key not in found:
            checker.error(entry[1], f"`timeout` of {what} is missing `{key}`")
    if "after" not in found or "next" not in found:
        return None
    target = _next(checker, found["next"], f"{what}: timeout.next", owner)
    text = checker.scalar(found["after"], f"{what}: timeout.after")
    after = _duration(checker, found["after"][1], text, what)
    return Timeout(after, target) if after is not None and target is not None else None


def _duration(checker: Checker, node: yaml.Node, text: str | None, what: str) -> timedelta | None:
    if text is None:
        return None
    try:
        return timing.parse_duration(text)
    except ValueError as exc:
        checker.error(node, f"{what}: timeout.after: {exc}")
        return None


def notify_problem(url: str) -> str | None:
    """Why `url` cannot be a notify address, or None: an absolute http(s) URL with a host."""
    # the URL is not quoted whole: a webhook's often holds its secret, and this message reaches logs
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError as exc:
        return f"notify is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"notify must be an http:// or https:// URL with a host, not one starting {url[:8]!r}"
    return None


def _notify(checker: Checker, entry: Entry, what: str) -> str | None:
    url = checker.scalar(entry, f"{what}: notify")
    problem = notify_problem(url) if url is not None else None
    if problem is not None:
        checker.error(entry[1], f"{what}: {problem}")
        return None
    return url


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1
