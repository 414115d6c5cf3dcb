"""The state diagram's layout: a pure function of a chart and its current state, drawn by the chart template.

A chart's states each have at most one target, so the diagram is a column: the states in the
order the chart walks them from its initial state (those it never reaches after, in file order),
one box a row, so it fits a phone's width. The arrow to the next row is straight; an arrow that
skips rows forward bends out to the right, one that goes back bends to the left, each in a lane of
its own so that no two overlap. Coordinates are in the SVG's user units; the page scales the view box.
"""

from __future__ import annotations

from dataclasses import dataclass

from stateservice.core.chart import Chart, Func, State

BOX_WIDTH, BOX_HEIGHT, GAP = 220, 48, 40  # a state's box, and the space for an arrow and its label below it
LANE = 14  # the width of one bending arrow's lane beside the column
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


def order(chart: Chart) -> list[State]:
    """The states top to bottom: the walk from the initial state along targets, then the rest in file order."""
    walked: list[State] = []
    seen: set[str] = set()
    state = chart.state(chart.initial)
    while state is not None and state.name not in seen:
        walked.append(state)
        seen.add(state.name)
        state = chart.state(state.target.name) if state.target is not None else None
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
    bends = [s for s in states if s.target is not None and row.get(s.target.name, -1) != row[s.name] + 1]
    back = [s for s in bends if s.target is not None and row[s.target.name] <= row[s.name]]
    ahead = [s for s in bends if s not in back]
    left = MARGIN + LANE * len(back) + (60 if back else 0)  # room for the lanes and their labels
    nodes = tuple(
        Node(
            s.name,
            left,
            MARGIN + index * (BOX_HEIGHT + GAP),
            "final" if s.final else (s.func.value if s.func else "final"),
            s.name == current,
            s.name == chart.initial,
        )
        for index, s in enumerate(states)
    )
    edges = [_straight(s, row, left) for s in states if s.target is not None and s not in bends]
    edges += [_bent(s, row, left, lane, back=True) for lane, s in enumerate(back, 1)]
    edges += [_bent(s, row, left, lane, back=False) for lane, s in enumerate(ahead, 1)]
    width = left + BOX_WIDTH + LANE * len(ahead) + (60 if ahead else 0) + MARGIN
    height = MARGIN * 2 + len(states) * (BOX_HEIGHT + GAP) - GAP
    return Diagram(width, height, nodes, tuple(edges))


def _top(index: int) -> int:
    return MARGIN + index * (BOX_HEIGHT + GAP)


def _straight(state: State, row: dict[str, int], left: int) -> Edge:
    assert state.target is not None
    x = left + BOX_WIDTH // 2
    y1, y2 = _top(row[state.name]) + BOX_HEIGHT, _top(row[state.target.name])
    label_y = (y1 + y2) // 2 + 4
    return Edge(state.name, state.target.name, f"M {x} {y1} L {x} {y2}", condition(state), x + 8, label_y, "start")


def _bent(state: State, row: dict[str, int], left: int, lane: int, *, back: bool) -> Edge:
    """An arrow out of the box's side, along its lane, and into the target box's side."""
    assert state.target is not None
    y1 = _top(row[state.name]) + BOX_HEIGHT // 2
    y2 = _top(row.get(state.target.name, row[state.name])) + BOX_HEIGHT // 2 + (6 if back else -6)
    if back:
        edge_x, lane_x = left, left - LANE * lane
        label_x, anchor = lane_x - 4, "end"
    else:
        edge_x, lane_x = left + BOX_WIDTH, left + BOX_WIDTH + LANE * lane
        label_x, anchor = lane_x + 4, "start"
    path = f"M {edge_x} {y1} L {lane_x} {y1} L {lane_x} {y2} L {edge_x} {y2}"
    return Edge(state.name, state.target.name, path, condition(state), label_x, (y1 + y2) // 2, anchor)
