"""YAML text -> Chart, checking the whole file and reporting every problem as `file:line: message`.

Pure: takes the text and the path to name in messages, reads nothing. The YAML is composed
into nodes (not constructed) so that every value keeps its line; the resolver leaves
`on`/`off`/`yes`/`no` and timestamps as strings, so `value: 3000-01-01T12:00:00` means the
same quoted or not.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, tzinfo
from pathlib import PurePath
from zoneinfo import ZoneInfo

import yaml

from stateservice.core import parse_approval, parse_rollout, timing
from stateservice.core.chart import CHART_NAME, STATE_NAME, Chart, Counter, Func, State, Target
from stateservice.errors import ChartError, Problem

_DROPPED_TAGS = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp"}


class _Loader(yaml.SafeLoader):
    """SafeLoader whose implicit resolvers keep booleans-in-disguise and timestamps as strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The same, on libyaml's parser when PyYAML has it: about 10x faster, which thousands of charts feel."""


_FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers

_INT = "tag:yaml.org,2002:int"
_CONSTRUCTOR = yaml.constructor.SafeConstructor()  # stateless for scalars: reads 1_000, 0x10 as YAML does
TOP_KEYS = ("name", "timezone", "current_state", "states")
STATE_KEYS = ("name", "func", "current", "target", *parse_rollout.KEYS, *parse_approval.KEYS)
FUNCS = tuple(f.value for f in Func)


@dataclass
class Parsed:
    """The outcome of checking one chart file: the chart when there were no errors, and every finding."""

    path: str
    chart: Chart | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]

    def unwrap(self) -> Chart:
        """The chart, or ChartError listing every error."""
        if self.chart is None:
            raise ChartError(self.errors)
        return self.chart


def parse(
    text: str, path: str, name: str | None = None, zone: tzinfo = UTC, zones: Callable[[str], tzinfo] = ZoneInfo
) -> Parsed:
    """Check chart `text` from `path`; the chart name is `name:` in the file, else `name`, else the stem.

    Naive `clock` times are read in `zone` (the server's time zone) unless the chart names its
    own `timezone:`, which `zones` looks up (the zone database is data, like the text).
    """
    return _Checker(path, zone, zones).run(text, name)


def parse_all(texts: dict[str, str], zone: tzinfo = UTC) -> list[Parsed]:
    """Parse several files ({path: text}) and report chart names used twice across them."""
    return check_names([parse(text, path, zone=zone) for path, text in texts.items()])


def check_names(results: Sequence[Parsed]) -> list[Parsed]:
    """`results`, with each chart whose name an earlier file already uses turned into that error.

    The results given are not changed (a caller may keep them to reuse): an offender is a new Parsed.
    """
    checked = []
    seen: dict[str, str] = {}
    for result in results:
        if result.chart is not None:
            other = seen.setdefault(result.chart.name, result.path)
            if other != result.path:
                clash = Problem(result.path, 1, f"chart name {result.chart.name!r} is already used by {other}")
                result = Parsed(result.path, None, sorted([*result.problems, clash], key=lambda p: p.line))
        checked.append(result)
    return checked


def compose(text: str) -> yaml.Node | None:
    """The YAML node tree of `text`. Raises YAMLError, with PyYAML's own messages whichever parser ran."""
    try:
        return yaml.compose(text, Loader=_FastLoader)
    except yaml.YAMLError as error:
        fast = error
    except (ValueError, OverflowError) as exc:  # PyYAML's scanner on an escape such as "\U99999999"
        raise yaml.YAMLError(f"a quoted value has an escape that is no character ({exc})") from None
    except RecursionError:
        raise yaml.YAMLError(_TOO_DEEP) from None
    try:
        return yaml.compose(text, Loader=_Loader)  # libyaml words some errors differently: say it as always
    except (ValueError, OverflowError, RecursionError):  # PyYAML fails where libyaml refused cleanly: keep libyaml's
        raise fast from None


# PyYAML's composer recurses once per level: "[" * 20000 would end in RecursionError, not a message
_TOO_DEEP = "the document nests too deeply"


class _Checker:
    def __init__(self, path: str, zone: tzinfo, zones: Callable[[str], tzinfo] = ZoneInfo) -> None:
        self.path = path
        self.zone = zone
        self.zones = zones
        self.zone_of = "the server's time zone"
        self.problems: list[Problem] = []
        self.targets: list[tuple[str, str, yaml.Node]] = []  # (state, target name, node) to resolve at the end
        self.defined: dict[str, int] = {}  # every state name defined, valid or not, with its line

    def error(self, node: yaml.Node | int, message: str) -> None:
        self.problems.append(Problem(self.path, _line(node), message))

    def refer(self, owner: str, target: str, node: yaml.Node) -> None:
        """State `owner` leads to `target`: checked once every state of the file is known."""
        self.targets.append((owner, target, node))

    def warn(self, node: yaml.Node | int, message: str) -> None:
        self.problems.append(Problem(self.path, _line(node), message, warning=True))

    def run(self, text: str, default_name: str | None) -> Parsed:
        result = self.check(text, default_name)
        result.problems.sort(key=lambda p: p.line)
        return result

    def check(self, text: str, default_name: str | None) -> Parsed:
        result = Parsed(self.path, problems=self.problems)
        try:
            root = compose(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            self.error(mark.line + 1 if mark else 1, f"invalid YAML: {exc.problem or exc.context}")
            return result
        except yaml.YAMLError as exc:
            self.error(1, f"invalid YAML: {exc}")
            return result
        if root is None:
            self.error(1, "the file is empty; a chart needs `current_state` and `states`")
            return result
        top = self.mapping(root, "the chart", TOP_KEYS)
        if top is None:
            return result
        chart_name = self.chart_name(top, default_name or PurePath(self.path).stem)
        zone = self.timezone(top)
        states = self.states(top)
        initial = self.initial(top)
        if self.problems and any(not p.warning for p in self.problems):
            return result
        assert chart_name is not None and initial is not None
        self.check_time_cycles(states)
        if any(not p.warning for p in self.problems):
            return result
        self.warn_shape(states, initial, top["current_state"][1])
        result.chart = Chart(
            name=chart_name,
            initial=initial,
            states=tuple(states),
            path=self.path,
            source=text,
            digest=hashlib.sha256(text.encode()).hexdigest(),
            zone=zone,
        )
        return result

    # -- structure -------------------------------------------------------------------------

    def mapping(
        self, node: yaml.Node, what: str, allowed: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping of keys to values")
            return None
        found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                self.error(key, f"{what} has a key that is not a plain name")
                continue
            if key.value in found:
                self.error(key, f"duplicate key {key.value!r} in {what}")
                continue
            if key.value not in allowed:
                hint = difflib.get_close_matches(key.value, allowed, n=1)
                also = f"; did you mean {hint[0]!r}?" if hint else f" (allowed: {', '.join(allowed)})"
                self.error(key, f"unknown key {key.value!r} in {what}{also}")
                continue
            found[key.value] = (key, value)
        return found

    def scalar(self, entry: tuple[yaml.Node, yaml.Node], what: str) -> str | None:
        _, node = entry
        if not isinstance(node, yaml.ScalarNode) or node.tag.endswith(":null"):
            self.error(node, f"{what} must be a single value")
            return None
        return str(node.value)

    def integer(self, entry: tuple[yaml.Node, yaml.Node], what: str) -> int | None:
        text = self.scalar(entry, what)
        if text is None:
            return None
        if entry[1].tag != _INT:
            self.error(entry[1], f"{what} must be a whole number, not {text!r}")
            return None
        assert isinstance(entry[1], yaml.ScalarNode)
        try:
            value: int = _CONSTRUCTOR.construct_yaml_int(entry[1])
        except (ValueError, IndexError):  # tagged int but unreadable: `0x_`, `!!int abc`, 5000 digits
            self.error(entry[1], f"{what} must be a whole number, not {text!r}")
            return None
        return value

    def name(self, entry: tuple[yaml.Node, yaml.Node], what: str) -> str | None:
        text = self.scalar(entry, what)
        if text is not None and not STATE_NAME.fullmatch(text):
            self.error(
                entry[1],
                f"{what} {text!r} is not a valid state name "
                "(letters, digits, '.', '_', '-'; starting with a letter or digit; at most 128)",
            )
            return None
        return text

    def require(
        self, node: yaml.Node, found: dict[str, tuple[yaml.Node, yaml.Node]], key: str, what: str
    ) -> tuple[yaml.Node, yaml.Node] | None:
        if key not in found:
            self.error(node, f"{what} is missing `{key}`")
            return None
        return found[key]

    # -- the chart -------------------------------------------------------------------------

    def chart_name(self, top: dict[str, tuple[yaml.Node, yaml.Node]], default: str) -> str | None:
        if "name" in top:
            text = self.scalar(top["name"], "`name`")
            line: yaml.Node | int = top["name"][1]
        else:
            text, line = default, 1
        if text is not None and not CHART_NAME.fullmatch(text):
            where = "`name`" if "name" in top else "the chart name (taken from the file name)"
            self.error(
                line,
                f"{where} {text!r} is not valid: use letters, digits, '.', '_', '-' "
                "(at most 64, starting with a letter or digit)"
                + ("" if "name" in top else "; set `name:` in the file"),
            )
            return None
        return text

    def timezone(self, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> tzinfo | None:
        """The chart's own `timezone:` (its naive clock times and windows are read in it), or None: the server's."""
        if "timezone" not in top:
            return None
        text = self.scalar(top["timezone"], "`timezone`")
        if text is None:
            return None
        try:
            self.zone = self.zones(text)
            self.zone_of = "the chart's `timezone`"
        except (ValueError, KeyError) as exc:
            self.error(top["timezone"][1], f"`timezone` {text!r} is not a time zone name such as Europe/Berlin ({exc})")
            return None
        return self.zone

    def initial(self, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> str | None:
        if "current_state" not in top:
            self.error(1, "the chart is missing `current_state` (the name of the initial state)")
            return None
        name = self.name(top["current_state"], "`current_state`")
        if name is not None and self.defined and name not in self.defined:
            self.error(top["current_state"][1], f"`current_state` {name!r} is not a state of this chart")
        return name

    def states(self, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> list[State]:
        if "states" not in top:
            self.error(1, "the chart is missing `states` (the list of states)")
            return []
        node = top["states"][1]
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.error(node, "`states` must be a non-empty list of states")
            return []
        states: list[State] = []
        for item in node.value:
            state = self.state(item, self.defined)
            if state is not None:
                states.append(state)
        for owner, target, at in self.targets:
            if target not in self.defined:
                self.error(at, f"target {target!r} of state {owner!r} is not a state of this chart")
        return states

    def state(self, node: yaml.Node, lines: dict[str, int]) -> State | None:
        """Check one state; `lines` maps the names seen so far to their lines (duplicates are errors)."""
        found = self.mapping(node, "a state", STATE_KEYS)
        if found is None:
            return None
        named = self.state_name(node, found, lines)
        if named is None:
            return None
        name, name_line = named
        what = f"state {name!r}"
        func = self.func(found, what) if "func" in found else None
        if "func" in found and func is None:
            return None
        self.misplaced(found, what, func)
        state: State | None
        if func is None:
            state = State(name, None, line=name_line)
        elif func is Func.APPROVAL:
            approval = parse_approval.approval(self, node, found, name)
            state = State(name, func, line=name_line, approval=approval) if approval else None
        else:
            target = self.target(node, found, name, func)
            if func is Func.TIME:
                state = self.time_state(found, what, name, name_line, target)
            else:
                state = self.counted_state(node, found, what, name, name_line, target)
        kind = state.func if state else Func.INCREMENT  # a broken state: check the values, not where they belong
        rollout = parse_rollout.rollout(self, found, what, kind)
        return None if state is None or rollout is None else replace(state, rollout=rollout)

    def misplaced(self, found: dict[str, tuple[yaml.Node, yaml.Node]], what: str, func: Func | None) -> None:
        """Report keys that belong to another kind of state: `current`/`target` on a final one, approval keys
        anywhere but on an approval state."""
        if func is None:
            for extra in ("current", "target"):
                if extra in found:
                    self.error(found[extra][0], f"{what} has `{extra}` but no `func` (a state without func is final)")
        if func is not Func.APPROVAL:
            for extra in (k for k in parse_approval.KEYS if k in found):
                self.error(found[extra][0], f"{what}: `{extra}` belongs to approval states (func: approval)")

    def state_name(
        self, node: yaml.Node, found: dict[str, tuple[yaml.Node, yaml.Node]], lines: dict[str, int]
    ) -> tuple[str, int] | None:
        """A state's name and its line, recorded in `lines`; None if missing, malformed or a duplicate."""
        entry = self.require(node, found, "name", "a state")
        name = self.name(entry, "the state name") if entry else None
        if name is None:
            return None
        name_line = _line(found["name"][1])
        if name in lines:
            self.error(name_line, f"duplicate state {name!r} (first defined at line {lines[name]})")
            return None
        lines[name] = name_line
        return name, name_line

    def func(self, found: dict[str, tuple[yaml.Node, yaml.Node]], what: str) -> Func | None:
        """The state's `func:`, or None (reported) if it is not one we know."""
        func_text = self.scalar(found["func"], f"`func` of {what}")
        if func_text is None:
            return None
        if func_text not in FUNCS:
            hint = difflib.get_close_matches(func_text, FUNCS, n=1)
            also = f"; did you mean {hint[0]!r}?" if hint else ""
            self.error(
                found["func"][1], f"unknown func {func_text!r} in {what} (expected increment, time or approval){also}"
            )
            return None
        return Func(func_text)

    def time_state(
        self, found: dict[str, tuple[yaml.Node, yaml.Node]], what: str, name: str, line: int, target: Target | None
    ) -> State | None:
        """A `func: time` state: no counter, and a target other than itself."""
        if "current" in found:
            self.error(found["current"][0], f"{what}: func: time takes no `current` (the clock is implied)")
        if target is not None and target.name == name:
            self.error(found["target"][1], f"{what}: a time state cannot target itself")
        return State(name, Func.TIME, None, target, line) if target else None

    def counted_state(
        self,
        node: yaml.Node,
        found: dict[str, tuple[yaml.Node, yaml.Node]],
        what: str,
        name: str,
        line: int,
        target: Target | None,
    ) -> State | None:
        """A `func: increment` state: a counter, and a target count on the same key above its start."""
        counter = self.counter(node, found, what)
        if counter is None or target is None:
            return None
        if target.key != counter.key:
            self.error(found["target"][1], f"{what}: when.key {target.key!r} differs from current.key {counter.key!r}")
            return None
        assert isinstance(target.value, int)
        if target.value <= counter.start:
            self.error(
                found["target"][1],
                f"{what}: target count {target.value} is not above the start value {counter.start}",
            )
            return None
        return State(name, Func.INCREMENT, counter, target, line)

    def section(
        self,
        parent: yaml.Node,
        found: dict[str, tuple[yaml.Node, yaml.Node]],
        key: str,
        what: str,
        allowed: tuple[str, ...],
        label: str | None = None,
    ) -> tuple[yaml.Node, dict[str, tuple[yaml.Node, yaml.Node]]] | None:
        """The mapping under `key` of `what` (called `label` in messages): its node and entries, or None."""
        entry = self.require(parent, found, key, what)
        inner = self.mapping(entry[1], label or f"`{key}` of {what}", allowed) if entry else None
        return None if entry is None or inner is None else (entry[1], inner)

    def key_value(
        self, section: tuple[yaml.Node, dict[str, tuple[yaml.Node, yaml.Node]]], what: str
    ) -> tuple[tuple[yaml.Node, yaml.Node] | None, tuple[yaml.Node, yaml.Node] | None]:
        node, inner = section
        return self.require(node, inner, "key", what), self.require(node, inner, "value", what)

    def counter(self, node: yaml.Node, found: dict[str, tuple[yaml.Node, yaml.Node]], what: str) -> Counter | None:
        current = self.section(node, found, "current", what, ("key", "value"))
        if current is None:
            return None
        key_entry, value_entry = self.key_value(current, f"`current` of {what}")
        key = self.scalar(key_entry, "current.key") if key_entry else None
        value = self.integer(value_entry, "current.value") if value_entry else None
        if key is None or value is None:
            return None
        return Counter(key, value)

    def target(
        self, node: yaml.Node, found: dict[str, tuple[yaml.Node, yaml.Node]], owner: str, func: Func
    ) -> Target | None:
        what = f"state {owner!r}"
        target = self.section(node, found, "target", what, ("name", "when"))
        if target is None:
            return None
        name_entry = self.require(target[0], target[1], "name", f"`target` of {what}")
        name = self.name(name_entry, "target name") if name_entry else None
        if name is not None and name_entry is not None:
            self.refer(owner, name, name_entry[1])
        when = self.section(target[0], target[1], "when", f"`target` of {what}", ("key", "value"), f"`when` of {what}")
        if when is None:
            return None
        key_entry, value_entry = self.key_value(when, f"`when` of {what}")
        key = self.scalar(key_entry, "when.key") if key_entry else None
        if value_entry is None or key is None or name is None:
            return None
        if func is Func.INCREMENT:
            count = self.integer(value_entry, "when.value")
            return Target(name, key, count) if count is not None else None
        stamp = self.scalar(value_entry, "when.value")
        if stamp is None:
            return None
        if key == "clock":
            try:
                due, naive = timing.parse_instant(stamp, self.zone)
            except ValueError as exc:
                self.error(value_entry[1], f"{what}: when.value {stamp!r} is not a timestamp ({exc})")
                return None
            if naive:
                self.warn(
                    value_entry[1],
                    f"{what}: {stamp} has no offset, so it is read in {self.zone_of} ({self.zone}); "
                    "add Z or an offset such as +02:00 to make it the same everywhere",
                )
            return Target(name, key, stamp, due=due)
        if key == "elapsed":
            try:
                after = timing.parse_duration(stamp)
            except ValueError as exc:
                self.error(value_entry[1], f"{what}: when.value: {exc}")
                return None
            return Target(name, key, stamp, after=after)
        self.error(
            key_entry[1] if key_entry else node,
            f"{what}: func: time needs when.key 'clock' (a date-time) or 'elapsed' (a duration), not {key!r}",
        )
        return None

    def check_time_cycles(self, states: list[State]) -> None:
        """A loop of time states with a clock time would fall due forever: the clock time stays past."""
        index = {s.name: s for s in states}
        reported: set[str] = set()
        for state in states:
            loop = _loop_from(index, state.name)
            if not loop or loop[0] != state.name or reported & set(loop):
                continue
            members = [index[n] for n in loop]
            if all(m.func is Func.TIME for m in members) and any(m.target and m.target.due for m in members):
                reported.update(loop)
                self.error(
                    state.line,
                    "the time states " + " -> ".join([*loop, loop[0]]) + " form a loop with a clock time, "
                    "which would move forever once that time has passed; use elapsed durations or a state that "
                    "waits for reports",
                )

    def warn_shape(self, states: list[State], initial: str, initial_node: yaml.Node) -> None:
        index = {s.name: s for s in states}
        if index[initial].final:
            self.warn(initial_node, f"the initial state {initial!r} is final: this chart can never move")
        reachable = _reachable(index, initial)
        for state in states:
            if state.name not in reachable:
                self.warn(state.line, f"state {state.name!r} is unreachable from {initial!r}")


def _reachable(index: dict[str, State], start: str) -> set[str]:
    """Every state some path of targets, choices, defaults and timeouts leads to from `start`."""
    seen = {start}
    todo = [start]
    while todo:
        for name in index[todo.pop()].successors():
            if name in index and name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def _walk(index: dict[str, State], start: str) -> Iterator[str]:
    name: str | None = start
    seen: set[str] = set()
    while name is not None and name not in seen:
        seen.add(name)
        yield name
        target = index[name].target
        name = target.name if target else None


def _loop_from(index: dict[str, State], start: str) -> list[str]:
    """The cycle that following targets from `start` runs into (empty when the walk ends at a final state)."""
    path = list(_walk(index, start))
    last = index[path[-1]].target
    if last is None:
        return []
    return path[path.index(last.name) :]


def _line(node: yaml.Node | int) -> int:
    return node if isinstance(node, int) else node.start_mark.line + 1
