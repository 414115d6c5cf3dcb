"""The chart model: frozen dataclasses describing a state machine and its live snapshot.

Pure: no I/O, no clock reads. `parse.py` builds a `Chart` from YAML; `rules.py` moves a
`Snapshot` along it; `store/` persists snapshots in Redis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from enum import Enum

from stateservice.core.approvals import Approval
from stateservice.core.budget import Budget
from stateservice.core.windows import Window

# Names end up in Redis keys, HTTP headers and log lines, so they get a closed alphabet:
# no braces (they would break the per-chart cluster hash tag), no spaces, no control bytes.
CHART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
STATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,252}")


class Func(Enum):
    """How a state moves on: by counted reports, by the clock, or by a person's resume. Final states have none."""

    INCREMENT = "increment"
    TIME = "time"
    APPROVAL = "approval"


@dataclass(frozen=True, slots=True)
class Counter:
    """An increment state's counter: its name and the value it starts at on every visit."""

    key: str
    start: int


@dataclass(frozen=True, slots=True)
class Target:
    """Where a state goes, and the condition (`when.key`, `when.value`) that moves it.

    For time states the value is also read: `due` for `clock` (an aware instant), `after`
    for `elapsed` (a duration from entering the state).
    """

    name: str
    key: str
    value: int | str
    due: datetime | None = None
    after: timedelta | None = None


DEFAULT_SLOT_TTL = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Rollout:
    """How hosts may work through a state: at most `concurrency` at once, a failure budget, and when its gate opens.

    `concurrency` and `max_failures` belong to increment states (hosts report into them);
    `windows` and `blackouts` to any state with a gate. No windows: every day, all day.
    """

    concurrency: int | None = None
    slot_ttl: timedelta = DEFAULT_SLOT_TTL
    max_failures: Budget | None = None
    windows: tuple[Window, ...] = ()
    blackouts: frozenset[date] = frozenset()

    @property
    def timed(self) -> bool:
        """Whether the gate depends on the calendar."""
        return bool(self.windows or self.blackouts)


NO_ROLLOUT = Rollout()


@dataclass(frozen=True, slots=True)
class State:
    name: str
    func: Func | None
    counter: Counter | None = None
    target: Target | None = None
    line: int = 0
    rollout: Rollout = NO_ROLLOUT
    approval: Approval | None = None  # func: approval states: their choices, default, timeout and notify

    @property
    def final(self) -> bool:
        return self.func is None

    def successors(self) -> list[str]:
        """Every state this one may lead to: its target, or an approval's choices, default and timeout."""
        if self.approval is not None:
            return self.approval.targets()
        return [self.target.name] if self.target else []


@dataclass(frozen=True, slots=True)
class Chart:
    """A validated chart. `source` is the file's text and `digest` its SHA-256."""

    name: str
    initial: str
    states: tuple[State, ...]
    path: str = ""
    source: str = ""
    digest: str = ""
    zone: tzinfo | None = None  # the chart's `timezone:`; None: the server's
    _index: dict[str, State] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {s.name: s for s in self.states})

    def state(self, name: str) -> State | None:
        return self._index.get(name)

    @property
    def state_names(self) -> list[str]:
        return [s.name for s in self.states]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Where a chart is: its current state, that state's counter, when it was entered (aware UTC), and any halt.

    `halted` is the reason the chart is halted in this visit of its state (None: it is not);
    entering a state ends a halt.
    """

    state: str
    count: int
    entered_at: datetime
    halted: str | None = None
    halted_at: datetime | None = None
    continuation: str | None = None  # in an approval state: the id that resumes this visit (the store makes it)


@dataclass(frozen=True, slots=True)
class Transition:
    """A history record: a move from one state to the next, with why (`put`, `time`, `reset`, `operator`) and who
    caused it; or an event within a state (`slot`, `release`, `slot_expired`, `failure`, `halt`, `resume`,
    `forget`, `notify`), whose from and to are that state. Approval states add the causes `approval` (a resume,
    `actor` who and `reason` the input's keys) and `timeout`."""

    chart: str
    from_state: str
    to_state: str
    cause: str
    at: datetime
    host: str | None = None
    due_at: datetime | None = None  # time transitions: when it fell due (`at` is when it was applied)
    actor: str | None = None  # who: a token name or client-certificate CN, `-` without auth, `time` for the clock
    remote: str | None = None  # the caller's address, for audit
    reason: str | None = None  # failures, halts and operator actions: why
