"""An approval state's keys (`choices`, `default`, `timeout`, `notify`) -> `Approval`, with file:line problems.

Pure, like `parse.py`, whose checker it reports through. Next states are resolved by the
checker at the end of the file (they may be defined further down); what can be told from the
state alone is told here: a choice an earlier one always catches, an empty `when`, a state
that could wait forever (no default and no timeout), a notify address that is not http(s), a `when`
number too large to be finite (an error) and a `~` or empty `when` value (a warning: it is text).
"""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta
from typing import Protocol
from urllib.parse import urlsplit

import yaml

from stateservice.core import timing
from stateservice.core.approvals import Approval, Choice, Scalar, Timeout, shadowed

KEYS = ("choices", "default", "timeout", "notify")
# JSON's words and number grammar (RFC 8259), not YAML 1.1's resolvers: those read 12:30 as 750,
# 010 as 8, 0x10 as 16 and ~ as null, and leave 1e3 text, so a resume sending what the chart
# shows would match nothing.
_WORDS: dict[str, Scalar] = {"true": True, "false": False, "null": None}
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NULL = "tag:yaml.org,2002:null"

Entry = tuple[yaml.Node, yaml.Node]


class Checker(Protocol):
    """What the chart checker offers: report at a node, read a section, a state name, and resolve names later."""

    def error(self, node: yaml.Node | int, message: str) -> None: ...

    def warn(self, node: yaml.Node | int, message: str) -> None: ...

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
        read = _when_value(checker, value, f"{what}: when.{field}")
        if isinstance(read, _Bad):
            return None
        values.append((field, read))
    return Choice(tuple(values), target)


def _when_value(checker: Checker, node: yaml.Node, what: str) -> Scalar | _Bad:
    read = _value(node)
    if isinstance(read, _Bad):
        checker.error(node, f"{what} must be a single value (text, number, true, false or null)")
    elif isinstance(read, float) and not math.isfinite(read):
        # JSON has no infinity: no resume could send one, so this choice could never match
        checker.error(node, f"{what}: {node.value} is too large for a number; quote it if it is text")
        return _Bad()
    elif _null_spelling(node):
        checker.warn(node, f"{what} is the text {node.value!r}, as JSON would read it: write null for null or quote it")
    return read


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
    """A `when` value as JSON would read it: a plain scalar that is a JSON number, true, false or null is
    that value, anything else (quoted, or not JSON) is the text written."""
    if not isinstance(node, yaml.ScalarNode):
        return _Bad()
    text = str(node.value)
    if node.style:  # quoted or a block: text, whatever it says (PyYAML: None for plain, libyaml: "")
        return text
    return plain(text)


def plain(text: str) -> Scalar:
    """What `text` written unquoted in `when` means: the JSON number, true, false or null it is, else the text."""
    if text in _WORDS:
        return _WORDS[text]
    if _JSON_NUMBER.fullmatch(text):
        try:
            number: int | float = json.loads(text)
        except ValueError:  # an integer past Python's 4300 digits: too large to be finite, as JSON floats go
            number = float(text)
        return number
    return text


def _null_spelling(node: yaml.Node) -> bool:
    """A plain `~`, `Null` or nothing: YAML's null, but text here; whoever wrote it likely meant null."""
    return isinstance(node, yaml.ScalarNode) and not node.style and node.tag == _NULL and node.value != "null"


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
