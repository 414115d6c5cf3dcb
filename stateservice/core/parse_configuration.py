"""YAML text -> Configuration (core/machines.py), every problem as `file:line: message`.

Pure: takes the text and the path to name in messages, reads nothing. The text is composed by
`parse.compose` (so `yes`/`on` and timestamps stay text, as in chart files), turned into the plain
data a JSON POST carries, and checked by `configuration_from`; each of its findings goes on the
line of the node at the finding's path. Scalars are read as the text written (`version: 1.10`
is "1.10", not 1.1); only a null (`~`, or nothing) is not text, and an approval state's `when`
values, which are read as JSON would read them (`approved: true` is true, `level: 2` is 2,
`slot: 12:30` and `who: ~` are text), as chart files read them (parse_approval.scalar).
"""

from __future__ import annotations

from typing import Any

import yaml

from stateservice.core.machines import Configuration, Invalid, Path, configuration_from
from stateservice.core.parse import compose
from stateservice.core.parse_approval import scalar
from stateservice.errors import ChartError, Problem

_NULL = "tag:yaml.org,2002:null"
# A configuration is a few levels deep; aliases could make a short file expand past any memory
# (and every finding quotes its value), so the plain data is bounded before anything reads it.
MAX_DEPTH = 32
MAX_VALUES = 100_000


def parse_configuration(text: str, path: str) -> Configuration:
    """The configuration YAML `text` (read from `path`) describes. Raises ChartError listing every problem."""
    try:
        root = compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "unreadable"
        if exc.context and message.startswith("but "):  # "but found another document" needs what was expected
            message = f"{exc.context}, {message}"
        raise ChartError([Problem(path, mark.line + 1 if mark else 1, f"invalid YAML: {message}")]) from None
    except yaml.YAMLError as exc:
        raise ChartError([Problem(path, 1, f"invalid YAML: {exc}")]) from None
    if root is None:
        raise ChartError([Problem(path, 1, "the file is empty; a configuration needs name, version, states")])
    if not isinstance(root, yaml.MappingNode):
        raise ChartError(
            [Problem(path, _line(root), "a configuration is a mapping of name, version, states, transitions")]
        )
    builder = _Builder(path)
    try:
        data = builder.plain(root)
    except _Refused as refused:
        raise ChartError(sorted([*builder.problems, refused.problem], key=lambda p: p.line)) from None
    _type_when(root, data)
    try:
        configuration = configuration_from(data)
    except Invalid as invalid:
        found = [Problem(path, line_at(root, f.path), str(f)) for f in invalid.findings]
        raise ChartError(sorted([*builder.problems, *found], key=lambda p: p.line)) from None
    if builder.problems:
        raise ChartError(sorted(builder.problems, key=lambda p: p.line))
    return configuration


def line_at(root: yaml.Node, path: Path) -> int:
    """The line of the node at `path` (a mapping entry's key line), else of its nearest ancestor; 1 for the top."""
    node, line = root, 1
    for element in path:
        if isinstance(node, yaml.MappingNode) and isinstance(element, str):
            entry = next((e for e in node.value if isinstance(e[0], yaml.ScalarNode) and e[0].value == element), None)
            if entry is None:
                break
            line, node = _line(entry[0]), entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(element, int) and 0 <= element < len(node.value):
            node = node.value[element]
            line = _line(node)
        else:
            break
    return line


def node_at(root: yaml.Node, path: Path) -> yaml.Node | None:
    """The node at `path`, or None."""
    node: yaml.Node | None = root
    for element in path:
        if isinstance(node, yaml.MappingNode) and isinstance(element, str):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == element), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(element, int) and 0 <= element < len(node.value):
            node = node.value[element]
        else:
            return None
    return node


def _type_when(root: yaml.Node, data: Any) -> None:
    """Give the `when` values of approval states their JSON types, in place (the rest stays text)."""
    states = data.get("states") if isinstance(data, dict) else None
    for i, state in enumerate(states if isinstance(states, list) else []):
        choices = state.get("choices") if isinstance(state, dict) else None
        for j, choice in enumerate(choices if isinstance(choices, list) else []):
            when = choice.get("when") if isinstance(choice, dict) else None
            node = node_at(root, ("states", i, "choices", j, "when"))
            if not isinstance(when, dict) or not isinstance(node, yaml.MappingNode):
                continue
            for key, value in node.value:
                plain, read = scalar(value)
                if isinstance(key, yaml.ScalarNode) and key.value in when and plain:
                    when[key.value] = read


class _Refused(Exception):
    """The document cannot become plain data at all (too deep, too large, an alias inside itself)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem


class _Built:
    """A node turned into plain data, with how many values it expands to and how deep it goes."""

    __slots__ = ("height", "size", "value")

    def __init__(self, value: Any, size: int = 1, height: int = 0) -> None:
        self.value, self.size, self.height = value, size, height


class _Builder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.built: dict[int, _Built] = {}  # by id(node): an alias shares the value its anchor built
        self.open: set[int] = set()  # the nodes being built: an alias to one of them is a cycle

    def refuse(self, node: yaml.Node, message: str) -> _Refused:
        return _Refused(Problem(self.path, _line(node), message))

    def plain(self, node: yaml.Node) -> Any:
        return self.entry(node, 0).value

    def entry(self, node: yaml.Node, depth: int) -> _Built:
        if id(node) in self.open:
            raise self.refuse(node, "an alias refers to a value that contains it")
        if depth > MAX_DEPTH:
            raise self.refuse(node, f"the document nests more than {MAX_DEPTH} levels deep")
        built = self.built.get(id(node))
        if built is None:
            self.open.add(id(node))
            built = self.build(node, depth)
            self.open.discard(id(node))
            self.built[id(node)] = built
        if built.size > MAX_VALUES:
            raise self.refuse(node, f"the document holds more than {MAX_VALUES} values (counting what aliases repeat)")
        if depth + built.height > MAX_DEPTH:  # an alias repeats its anchor's depth wherever it is used
            raise self.refuse(node, f"the document nests more than {MAX_DEPTH} levels deep")
        return built

    def build(self, node: yaml.Node, depth: int) -> _Built:
        if isinstance(node, yaml.SequenceNode):
            items = [self.entry(child, depth + 1) for child in node.value]
            return _combine([c.value for c in items], items)
        if isinstance(node, yaml.MappingNode):
            entries = self.entries(node)
            values = [self.entry(value, depth + 1) for _, value in entries]
            return _combine({key: c.value for (key, _), c in zip(entries, values, strict=True)}, values)
        return _Built(None if node.tag == _NULL else str(node.value))

    def entries(self, node: yaml.MappingNode) -> list[tuple[str, yaml.Node]]:
        """`node`'s entries with a plain key, each key once (a duplicate is a problem; the first counts)."""
        found: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                self.problems.append(
                    Problem(self.path, _line(key), "a key must be a plain name, not a list or mapping")
                )
            elif key.value in found:
                self.problems.append(Problem(self.path, _line(key), f"duplicate key {key.value!r}"))
            else:
                found[key.value] = value
        return list(found.items())


def _combine(value: Any, children: list[_Built]) -> _Built:
    return _Built(value, 1 + sum(c.size for c in children), 1 + max((c.height for c in children), default=0))


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1
