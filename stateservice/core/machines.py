"""Configurations and their instances: the event-driven machines (go-statemachine, Upstart).

Pure: no I/O, no clock reads. A `Configuration` is an immutable, versioned set of states and
`{from, to, event}` transitions; any number of instances run it, each named by an id or, as
Upstart names a state, by the configuration and a set of properties (`instance_id`). `step`
is the rule an event follows; `store/machines.py` applies it atomically in Redis.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stateservice.core.approvals import Approval
from stateservice.core.chart import CHART_NAME, STATE_NAME
from stateservice.core.machine_approvals import ApprovalState, Read, check, read_state

# A configuration's name and version join as "name:version" in URLs and keys, so neither may
# hold a colon; the same closed alphabet as chart names keeps them safe in keys and headers.
NAME = CHART_NAME
EVENT = STATE_NAME
PROPERTY = CHART_NAME
INSTANCE_ID = STATE_NAME
MAX_PROPERTIES = 16
MAX_PROPERTY_VALUE = 256
MAX_STATES = 1000
MAX_TRANSITIONS = 10_000
# an event's fields, over HTTP and from the stream alike
EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_ORIGINATOR = 200
MAX_DETAILS = 4096  # bytes of `details`, JSON-encoded: kept in the history of every instance it moves
# the query's own parameters (GET /statemachines?configuration=&state=&limit=&cursor=): any other names a
# property, so a property of one of these names could never be asked for
RESERVED_PROPERTIES = frozenset({"configuration", "state", "limit", "cursor"})
DERIVED = "p-"  # instance_id's prefix: reserved, so an explicit id never takes a property-named one's place

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem of a configuration, at `path` in the document (e.g. ("transitions", 2, "to"))."""

    path: Path
    message: str

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.path)
        return f"{where}: {self.message}" if where else self.message


class Invalid(ValueError):
    """A configuration (or properties, or a reference) that cannot be used; `findings` lists every problem."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = tuple(findings)
        super().__init__("; ".join(str(f) for f in self.findings))


@dataclass(frozen=True, slots=True)
class Requirement:
    """A guard: the transition may happen only while a chart, or another instance, is in `state`.

    `chart` names a chart; otherwise `configuration` ("name:version") and `properties` name an
    instance by its properties (its id is `instance_id(configuration, properties)`).
    """

    state: str
    chart: str | None = None
    configuration: str | None = None
    properties: tuple[tuple[str, str], ...] = ()

    def instance(self) -> str | None:
        """The id of the required instance, or None for a chart requirement."""
        if self.configuration is None:
            return None
        return instance_id(self.configuration, dict(self.properties))

    def document(self) -> dict[str, Any]:
        if self.chart is not None:
            return {"chart": self.chart, "state": self.state}
        return {"configuration": self.configuration, "properties": dict(self.properties), "state": self.state}


@dataclass(frozen=True, slots=True)
class Transition:
    source: str
    target: str
    event: str
    requires: Requirement | None = None

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": self.source, "to": self.target, "event": self.event}
        if self.requires is not None:
            out["requires"] = self.requires.document()
        return out


@dataclass(frozen=True, slots=True)
class Configuration:
    """An immutable versioned machine: once stored under `name:version`, never changed."""

    name: str
    version: str
    states: tuple[str, ...]
    transitions: tuple[Transition, ...]
    starting_state: str
    approvals: tuple[ApprovalState, ...] = ()  # the states given as approval objects (issue #16)
    # Not an __init__ argument: `dataclasses.replace` would pass the old index on, stale and shared.
    _by_event: dict[str, dict[str, Transition]] = field(init=False, compare=False, repr=False)
    _approvals: dict[str, ApprovalState] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        by_event: dict[str, dict[str, Transition]] = {}
        for t in self.transitions:
            by_event.setdefault(t.event, {})[t.source] = t
        object.__setattr__(self, "_by_event", by_event)
        object.__setattr__(self, "_approvals", {a.name: a for a in self.approvals})

    def approval(self, state: str) -> Approval | None:
        """The approval `state` waits for, or None for a plain state."""
        found = self._approvals.get(state)
        return found.approval if found is not None else None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def moves(self, event: str) -> Mapping[str, Transition]:
        """Every transition `event` may take, by the state it leaves."""
        return self._by_event.get(event, {})

    def allowed(self, state: str) -> list[str]:
        """The events the instance may take in `state`, sorted."""
        return sorted(e for e, moves in self._by_event.items() if state in moves)

    def events(self) -> list[str]:
        return sorted(self._by_event)

    def document(self) -> dict[str, Any]:
        """The configuration as POSTed: what `GET /configurations/{name}:{version}` answers."""
        return {
            "name": self.name,
            "version": self.version,
            "states": [self._approvals[s].document() if s in self._approvals else s for s in self.states],
            "transitions": [t.document() for t in self.transitions],
            "starting_state": self.starting_state,
        }


def step(configuration: Configuration, state: str, event: str) -> Transition | None:
    """The transition `event` takes from `state`, or None when the event is not allowed there."""
    return configuration.moves(event).get(state)


def parse_ref(ref: str) -> tuple[str, str]:
    """`name:version` -> (name, version). Raises Invalid."""
    name, colon, version = ref.partition(":")
    if not colon or not NAME.fullmatch(name) or not NAME.fullmatch(version):
        raise Invalid([Finding((), f"{ref!r} is not NAME:VERSION (letters, digits, '.', '_', '-'; up to 64 each)")])
    return name, version


def check_id(instance: str) -> None:
    """An explicit instance id. Raises Invalid."""
    if not INSTANCE_ID.fullmatch(instance) or instance.startswith(DERIVED):
        message = f"{instance!r} is not an id: letters, digits, '.', '_', '-', not starting with {DERIVED!r}"
        raise Invalid([Finding(("id",), message)])


def event_id_problem(event_id: object) -> str | None:
    if isinstance(event_id, str) and EVENT_ID.fullmatch(event_id):
        return None
    return f"event_id {str(event_id)[:80]!r} is not an id: 1-128 letters, digits, '.', '_', ':', '-'"


def originator_problem(originator: object) -> str | None:
    if isinstance(originator, str) and 0 < len(originator) <= MAX_ORIGINATOR and originator.isprintable():
        return None
    return f"originator must be 1-{MAX_ORIGINATOR} printable characters"


def details_problem(encoded: bytes) -> str | None:
    """`encoded`: the details as JSON."""
    return None if len(encoded) <= MAX_DETAILS else f"details must be at most {MAX_DETAILS} bytes as JSON"


def canonical_properties(properties: Mapping[str, str]) -> str:
    """The properties as one string, keys sorted: equal sets of properties give equal strings."""
    return json.dumps(dict(sorted(properties.items())), separators=(",", ":"), ensure_ascii=False)


def instance_id(ref: str, properties: Mapping[str, str]) -> str:
    """The id of the instance `ref` names by `properties`: the same for the same set, in any order.

    "p-" and 26 base32 letters of a SHA-256 (130 bits): short enough to keep the per-instance
    memory low, long enough that two property sets never meet.
    """
    digest = hashlib.sha256(f"{ref}\n{canonical_properties(properties)}".encode()).digest()
    return DERIVED + base64.b32encode(digest).decode().lower()[:26]


def check_properties(value: Any, where: Path = ("properties",)) -> tuple[dict[str, str], list[Finding]]:
    """Properties as given in a request or a requirement: a mapping of names to strings."""
    if not isinstance(value, Mapping) or not value:
        return {}, [Finding(where, "must be a non-empty mapping of property names to strings")]
    findings: list[Finding] = []
    if len(value) > MAX_PROPERTIES:
        findings.append(Finding(where, f"at most {MAX_PROPERTIES} properties; got {len(value)}"))
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not PROPERTY.fullmatch(key):
            findings.append(Finding((*where, str(key)), "a property name is letters, digits, '.', '_', '-'"))
        elif key in RESERVED_PROPERTIES:
            reserved = ", ".join(sorted(RESERVED_PROPERTIES))
            findings.append(
                Finding((*where, key), f"{key!r} is no property name: {reserved} are the query's parameters")
            )
        elif not isinstance(item, str) or not item or len(item) > MAX_PROPERTY_VALUE:
            findings.append(Finding((*where, key), f"must be a string of 1-{MAX_PROPERTY_VALUE} characters"))
        elif not _unicode(item):
            findings.append(Finding((*where, key), "must be Unicode text: a lone surrogate has no UTF-8"))
        else:
            out[key] = item
    return out, findings


def _unicode(text: str) -> bool:
    # JSON's "\ud800" decodes to a lone surrogate, which instance_id (and Redis) cannot encode
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def configuration_from(data: Any) -> Configuration:
    """A Configuration from a POSTed (or YAML) document. Raises Invalid listing every problem."""
    if not isinstance(data, Mapping):
        raise Invalid([Finding((), "a configuration is a JSON object with name, version, states, transitions")])
    reader = _Reader()
    name = reader.name(data, "name")
    version = reader.name(data, "version")
    states = reader.states(data)
    start = reader.start(data, states)
    transitions = reader.transitions(data, states)
    reader.unknown(data, {"name", "version", "states", "transitions", "starting_state"}, ())
    for i, read in reader.approvals:
        reader.findings.extend(Finding(f.path, f.message) for f in check(read, states, ("states", i)))
    if reader.findings:
        raise Invalid(reader.findings)
    assert name is not None and version is not None and start is not None
    approvals = tuple(read.state for _, read in reader.approvals if read.state is not None)
    return Configuration(name, version, tuple(states), tuple(transitions), start, approvals)


class _Reader:
    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.approvals: list[tuple[int, Read]] = []  # by their index in `states`

    def fail(self, path: Path, message: str) -> None:
        self.findings.append(Finding(path, message))

    def unknown(self, data: Mapping[str, Any], known: set[str], path: Path) -> None:
        for key in data:
            if key not in known:
                self.fail((*path, str(key)), f"unknown key; expected {', '.join(sorted(known))}")

    def name(self, data: Mapping[str, Any], key: str) -> str | None:
        value = data.get(key)
        if value is None:
            self.fail((key,), "is required")
        elif not isinstance(value, str) or not NAME.fullmatch(value):
            self.fail((key,), f"{value!r} is not a name: letters, digits, '.', '_', '-', up to 64, no ':'")
        else:
            return value
        return None

    def states(self, data: Mapping[str, Any]) -> list[str]:
        value = data.get("states")
        if not isinstance(value, list) or not value:
            self.fail(("states",), "is required: a non-empty list of state names")
            return []
        if len(value) > MAX_STATES:
            self.fail(("states",), f"at most {MAX_STATES} states; got {len(value)}")
        seen: dict[str, None] = {}  # ordered, and a thousand states need no quadratic scan
        for i, state in enumerate(value):
            if isinstance(state, Mapping):
                state = self.approval(state, i)
                if state is None:
                    continue
            if not isinstance(state, str) or not STATE_NAME.fullmatch(state):
                self.fail(("states", i), f"{state!r} is not a state name: letters, digits, '.', '_', '-'")
            elif state in seen:
                self.fail(("states", i), f"state {state!r} is listed twice")
            else:
                seen[state] = None
        return list(seen)

    def approval(self, value: Mapping[str, Any], i: int) -> str | None:
        """The name of the approval state `value` (states.i), kept for `check` once every state is known."""
        read = read_state(value, ("states", i))
        self.findings.extend(Finding(f.path, f.message) for f in read.found)
        self.approvals.append((i, read))
        name = value.get("name")
        return name if isinstance(name, str) and STATE_NAME.fullmatch(name) else None

    def start(self, data: Mapping[str, Any], states: list[str]) -> str | None:
        value = data.get("starting_state")
        if value is None:
            self.fail(("starting_state",), "is required: the state every instance starts in")
        elif not isinstance(value, str) or (states and value not in states):
            self.fail(("starting_state",), f"{value!r} is not one of the states")
        else:
            return value
        return None

    def transitions(self, data: Mapping[str, Any], states: list[str]) -> list[Transition]:
        value = data.get("transitions", [])
        if not isinstance(value, list):
            self.fail(("transitions",), "must be a list of {from, to, event}")
            return []
        if len(value) > MAX_TRANSITIONS:
            self.fail(("transitions",), f"at most {MAX_TRANSITIONS} transitions; got {len(value)}")
            return []
        out: list[Transition] = []
        seen: dict[tuple[str, str], int] = {}
        for i, item in enumerate(value):
            transition = self.transition(item, ("transitions", i), states)
            if transition is None:
                continue
            key = (transition.source, transition.event)
            if key in seen:
                self.fail(
                    ("transitions", i),
                    f"event {transition.event!r} from {transition.source!r} is already transition {seen[key]}: "
                    "an event must lead to one state",
                )
                continue
            seen[key] = i
            out.append(transition)
        return out

    def transition(self, item: Any, path: Path, states: list[str]) -> Transition | None:
        if not isinstance(item, Mapping):
            self.fail(path, "a transition is a mapping {from, to, event}")
            return None
        before = len(self.findings)
        ends = [self.endpoint(item, key, path, states) for key in ("from", "to")]
        event = item.get("event")
        if not isinstance(event, str) or not EVENT.fullmatch(event):
            self.fail((*path, "event"), f"{event!r} is not an event name: letters, digits, '.', '_', '-'")
        requires = self.requirement(item["requires"], (*path, "requires")) if "requires" in item else None
        self.unknown(item, {"from", "to", "event", "requires"}, path)
        if len(self.findings) > before:
            return None
        assert ends[0] is not None and ends[1] is not None and isinstance(event, str)
        return Transition(ends[0], ends[1], event, requires)

    def endpoint(self, item: Mapping[str, Any], key: str, path: Path, states: list[str]) -> str | None:
        value = item.get(key)
        if value is None:
            self.fail((*path, key), "is required")
        elif not isinstance(value, str) or value not in states:
            self.fail((*path, key), f"unknown state {value!r}; the states are {', '.join(states) or '(none)'}")
        else:
            return value
        return None

    def requirement(self, value: Any, path: Path) -> Requirement | None:
        if not isinstance(value, Mapping):
            self.fail(path, "requires is {chart, state} or {configuration, properties, state}")
            return None
        before = len(self.findings)
        state = value.get("state")
        if not isinstance(state, str) or not STATE_NAME.fullmatch(state):
            self.fail((*path, "state"), f"{state!r} is not a state name")
        if "chart" in value:
            self.unknown(value, {"chart", "state"}, path)
            chart = value["chart"]
            if not isinstance(chart, str) or not CHART_NAME.fullmatch(chart):
                self.fail((*path, "chart"), f"{chart!r} is not a chart name")
            if len(self.findings) > before:
                return None
            assert isinstance(state, str)
            return Requirement(state, chart=chart)
        self.unknown(value, {"configuration", "properties", "state"}, path)
        ref = value.get("configuration")
        try:
            parse_ref(ref if isinstance(ref, str) else "")
        except Invalid:
            self.fail((*path, "configuration"), f"{ref!r} is not NAME:VERSION (or give chart: NAME)")
        properties, findings = check_properties(value.get("properties"), (*path, "properties"))
        self.findings.extend(findings)
        if len(self.findings) > before:
            return None
        assert isinstance(state, str)
        return Requirement(state, configuration=ref, properties=tuple(sorted(properties.items())))
