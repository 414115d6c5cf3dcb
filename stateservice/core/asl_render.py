"""The chart YAML text of an imported ASL machine (see `asl.py`): header comments, then the states.

Pure. Every name and value is written as a YAML flow scalar that `parse.py` reads back as the same
value and type (text that looks like a number, a boolean or null is quoted), and every comment is
one line of ASCII, whatever the document's names and comments hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from stateservice.core.approvals import Choice
from stateservice.core.parse_approval import plain


@dataclass
class Out:
    """A chart state to write, named by its ASL name (renamed when written)."""

    name: str
    path: str
    func: str | None = None  # None: final; "time"; "approval"
    next: str | None = None  # time: the target; approval: its Next (a Choice, or the default)
    key: str = ""  # time: elapsed or clock
    value: str = ""
    timeout: tuple[int, str] | None = None  # approval: (seconds, the Catch's Next)
    notes: list[str] = field(default_factory=list)


def quote(value: object) -> str:
    """A value for a YAML comment: JSON on one line, every non-ASCII character escaped (YAML ends a comment at
    more line breaks than \\n)."""
    return json.dumps(value, ensure_ascii=True)


def _scalar(value: object) -> str:
    """`value` as one YAML flow scalar that the chart parser reads back as the same value and type."""
    if isinstance(value, str) and not isinstance(plain(value), str):
        # text JSON would read as a number (`1e3`, which YAML 1.1 leaves unquoted), true, false or null
        return json.dumps(value)
    text = yaml.safe_dump([value], default_flow_style=True, width=1 << 30)
    return text.strip()[1:-1]


def _flow(pairs: list[tuple[str, object]]) -> str:
    return "{" + ", ".join(f"{_scalar(k)}: {_scalar(v)}" for k, v in pairs) + "}"


def render(
    machine: dict[str, Any],
    name: str,
    source: str,
    outs: list[Out],
    names: dict[str, str],
    choices: dict[str, tuple[list[Choice], str | None]],
) -> str:
    """The chart: a header saying where it came from, then the states in the document's order (Choices excepted:
    they are inside their approvals)."""
    lines = [
        f"# Imported by `stateservice import-asl` from {quote(source)} (Amazon States Language).",
        "# Edit freely: nothing ties this chart to its source any more.",
    ]
    if "Comment" in machine:
        lines.append(f"# Comment: {quote(machine['Comment'])}")
    renamed = [f"#   {quote(a)} -> {c}" for a, c in names.items() if a != c]
    if renamed:
        lines += ["# States renamed to chart state names (letters, digits, '.', '_', '-'):", *renamed]
    lines += [f"name: {_scalar(name)}", f"current_state: {_scalar(names[machine['StartAt']])}", "states:"]
    for out in outs:
        lines += [f"  # {note}" for note in out.notes]
        lines.append(f"  - name: {_scalar(names[out.name])}")
        lines += _body(out, names, choices)
    return "\n".join(lines) + "\n"


def _body(out: Out, names: dict[str, str], choices: dict[str, tuple[list[Choice], str | None]]) -> list[str]:
    """A state's lines after its name."""
    if out.func is None:
        return []
    assert out.next is not None
    if out.func == "time":
        when = _flow([("key", out.key), ("value", out.value)])
        return ["    func: time", f"    target: {{name: {_scalar(names[out.next])}, when: {when}}}"]
    lines = ["    func: approval"]
    rules, default = choices.get(out.next, ([], out.next))
    if rules:
        lines.append("    choices:")
        for rule in rules:
            lines += [f"      - when: {_flow(list(rule.when))}", f"        next: {_scalar(names[rule.next])}"]
    if default is not None:
        lines.append(f"    default: {_scalar(names[default])}")
    if out.timeout is not None:
        seconds, target = out.timeout
        lines.append(f"    timeout: {{after: {seconds}s, next: {_scalar(names[target])}}}")
    return lines
