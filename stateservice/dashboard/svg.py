"""The state diagram's layout: a pure function of a chart and its current state, drawn by the chart template.

The diagram is a column, one box a row, so that it fits a phone's width: the states breadth
first from the initial state (a linear chart in the order it walks; those never reached after,
in file order). A state's first arrow to the next row is straight; every other arrow (an
approval's other choices, its default and timeout, a skip ahead, a loop back) bends out to the
right when it goes down and to the left when it goes up, each in a lane of its own so that no
two overlap. Coordinates are in the SVG's user units; the page scales the view box.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from stateservice.core.chart import Chart, Func, State
from stateservice.dashboard.view import duration

BOX_WIDTH, BOX_HEIGHT, GAP = 220, 48, 40  # a state's box, and the space for an arrow and its label below it
LANE = 14  # the width of one bending arrow's lane beside the column
LABEL_ROOM = 110  # beside the lanes, for their labels
MARGIN = 8


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    x: int
    y: int
    kind: str  # increment, time or final: said in words in the box, not by its colour alone
    current: bool
    initial: bool


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    path: str  # the SVG path's `d`
    label: str
    label_x: int
    label_y: int
    anchor: str  # the label's text-anchor


@dataclass(frozen=True, slots=True)
class Diagram:
    width: int
    height: int
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    box_width: int = BOX_WIDTH
    box_height: int = BOX_HEIGHT


def successors(state: State) -> list[tuple[str, str]]:
    """Where `state` may go, each target once with what leads there: its `when` condition, or an approval's
    choices (`approved = true`), `default` and `timeout 2h`, joined by ` / ` when several lead to one state."""
    found: dict[str, list[str]] = {}
    if state.approval is not None:
        for choice in state.approval.choices:
            found.setdefault(choice.next, []).append(", ".join(f"{k} = {_json(v)}" for k, v in choice.when))
        if state.approval.default is not None:
            found.setdefault(state.approval.default, []).append("default")
        timeout = state.approval.timeout
        if timeout is not None:
            found.setdefault(timeout.next, []).append(f"timeout {duration(timeout.after.total_seconds())}")
    elif state.target is not None:
        found[state.target.name] = [condition(state)]
    return [(target, " / ".join(labels)) for target, labels in found.items()]


def order(chart: Chart) -> list[State]:
    """The states top to bottom: breadth first from the initial state along every arrow, then the rest in file
    order (a linear chart reads in the order it walks)."""
    walked: list[State] = []
    queue = [chart.initial]
    seen = {chart.initial}
    while queue:
        state = chart.state(queue.pop(0))
        if state is None:
            continue
        walked.append(state)
        for target, _ in successors(state):
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return walked + [s for s in chart.states if s.name not in seen]


def condition(state: State) -> str:
    """What moves `state` on, as the arrow's label: `count = 3`, `elapsed 10m`, `clock 2026-12-01T09:00Z`."""
    target = state.target
    if target is None:
        return ""
    if state.func is Func.INCREMENT:
        return f"{target.key} = {target.value}"
    return f"{target.key} {target.value}"


def layout(chart: Chart, current: str) -> Diagram:
    """The diagram of `chart` with `current` highlighted."""
    states = order(chart)
    row = {state.name: index for index, state in enumerate(states)}
    arrows = [(s.name, target, label) for s in states for target, label in successors(s) if target in row]
    # the first arrow to the next row is drawn straight down; every other arrow bends, in a lane of its own
    straight: set[tuple[str, str]] = set()
    for source, target, _ in arrows:
        if row[target] == row[source] + 1 and not any(s == source for s, _ in straight):
            straight.add((source, target))
    bent = [a for a in arrows if (a[0], a[1]) not in straight]
    back = [a for a in bent if row[a[1]] <= row[a[0]]]
    ahead = [a for a in bent if row[a[1]] > row[a[0]]]
    left = MARGIN + LANE * len(back) + (LABEL_ROOM if back else 0)
    nodes = tuple(
        Node(s.name, left, _top(index), _kind(s), s.name == current, s.name == chart.initial)
        for index, s in enumerate(states)
    )
    edges = [_straight(a, row, left) for a in arrows if (a[0], a[1]) in straight]
    edges += [_bent(a, row, left, lane, back=True) for lane, a in enumerate(back, 1)]
    edges += [_bent(a, row, left, lane, back=False) for lane, a in enumerate(ahead, 1)]
    width = left + BOX_WIDTH + LANE * len(ahead) + (LABEL_ROOM if ahead else 0) + MARGIN
    height = MARGIN * 2 + len(states) * (BOX_HEIGHT + GAP) - GAP
    return Diagram(width, height, nodes, tuple(edges))


def _kind(state: State) -> str:
    return "final" if state.final or state.func is None else state.func.value


def _json(value: object) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _top(index: int) -> int:
    return MARGIN + index * (BOX_HEIGHT + GAP)


Arrow = tuple[str, str, str]  # source, target, label


def _straight(arrow: Arrow, row: dict[str, int], left: int) -> Edge:
    source, target, label = arrow
    x = left + BOX_WIDTH // 2
    y1, y2 = _top(row[source]) + BOX_HEIGHT, _top(row[target])
    return Edge(source, target, f"M {x} {y1} L {x} {y2}", label, x + 8, (y1 + y2) // 2 + 4, "start")


def _bent(arrow: Arrow, row: dict[str, int], left: int, lane: int, *, back: bool) -> Edge:
    """An arrow out of the box's side, along its lane, and into the target box's side."""
    source, target, label = arrow
    y1 = _top(row[source]) + BOX_HEIGHT // 2 + (-6 if back else 6)
    y2 = _top(row[target]) + BOX_HEIGHT // 2 + (6 if back else -6)
    if back:
        edge_x, lane_x = left, left - LANE * lane
        label_x, anchor = lane_x - 4, "end"
    else:
        edge_x, lane_x = left + BOX_WIDTH, left + BOX_WIDTH + LANE * lane
        label_x, anchor = lane_x + 4, "start"
    path = f"M {edge_x} {y1} L {lane_x} {y1} L {lane_x} {y2} L {edge_x} {y2}"
    return Edge(source, target, path, label, label_x, (y1 + y2) // 2, anchor)
