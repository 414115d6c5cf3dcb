"""The state diagram's layout: a column in walk order, straight arrows down, bent arrows in lanes beside it."""

from __future__ import annotations

import re

from stateservice.dashboard import svg
from tests.support.charts import CYCLE, chart, final, increment, load, review, timed

LINEAR = load(
    chart("linear", "a", increment("a", "b", 2), timed("b", "c", "elapsed", "10m"), final("c")), "linear.yaml"
)


def test_the_states_are_in_the_order_the_chart_walks_them() -> None:
    # the file lists done first and starts at canary: the walk, not the file, orders the column
    walked = load(chart("w", "canary", final("done"), increment("canary", "done", 1), final("orphan")), "w.yaml")
    assert [s.name for s in svg.order(walked)] == ["canary", "done", "orphan"]


def test_a_linear_chart_is_a_column_joined_by_straight_arrows() -> None:
    diagram = svg.layout(LINEAR, "b")
    xs = {node.x for node in diagram.nodes}
    ys = [node.y for node in diagram.nodes]
    assert len(xs) == 1 and ys == sorted(ys) and len(set(ys)) == 3
    edges = [(e.source, e.target, e.label) for e in diagram.edges]
    assert edges == [("a", "b", "hosts = 2"), ("b", "c", "elapsed 10m")]
    for edge in diagram.edges:
        assert re.fullmatch(r"M (\d+) \d+ L \1 \d+", edge.path)  # vertical
    assert [n.name for n in diagram.nodes if n.current] == ["b"]
    assert [n.kind for n in diagram.nodes] == ["increment", "time", "final"]
    assert diagram.nodes[0].initial and not diagram.nodes[1].initial


def test_every_box_and_arrow_fits_in_the_view_box() -> None:
    for written in (LINEAR, load(CYCLE, "cycle.yaml")):
        diagram = svg.layout(written, written.initial)
        for node in diagram.nodes:
            assert node.x >= 0 and node.x + diagram.box_width <= diagram.width
            assert node.y >= 0 and node.y + diagram.box_height <= diagram.height
        for edge in diagram.edges:
            numbers = [int(n) for n in re.findall(r"-?\d+", edge.path)]
            assert all(0 <= x <= diagram.width for x in numbers[0::2])
            assert all(0 <= y <= diagram.height for y in numbers[1::2])


def test_an_arrow_back_up_bends_out_to_the_left_in_a_lane() -> None:
    cycle = load(CYCLE, "cycle.yaml")  # canary -> fleet -> canary
    diagram = svg.layout(cycle, "fleet")
    back = next(e for e in diagram.edges if e.source == "fleet")
    column = diagram.nodes[0].x
    xs = [int(x) for x in re.findall(r"[ML] (\d+)", back.path)]
    assert min(xs) < column and xs[0] == xs[-1] == column  # out of the box's left side, back into its target's
    assert back.anchor == "end" and back.label_x < column


def test_arrows_that_skip_rows_take_lanes_of_their_own() -> None:
    skipping = load(
        chart(
            "skip",
            "a",
            increment("a", "d", 1),
            increment("b", "e", 1),
            increment("d", "e", 1),
            final("e"),
        ),
        "skip.yaml",
    )
    diagram = svg.layout(skipping, "a")
    assert [n.name for n in diagram.nodes] == ["a", "d", "e", "b"]
    back = [e for e in diagram.edges if e.source == "b"]  # b (last) -> e (above it): bends left
    assert back and back[0].anchor == "end"
    lanes = [re.findall(r"L (\d+)", e.path)[0] for e in diagram.edges if e.anchor == "end"]
    assert len(lanes) == len(set(lanes))


def test_an_approval_state_has_an_arrow_for_each_state_it_may_lead_to() -> None:
    gate = load(
        chart("gate", "canary", increment("canary", "review", 1), review("1h"), final("fleet"), final("rolled_back"))
    )
    diagram = svg.layout(gate, "review")
    assert [n.name for n in diagram.nodes] == ["canary", "review", "fleet", "rolled_back"]
    assert [n.kind for n in diagram.nodes if n.current] == ["approval"]
    out = {(e.target, e.label, e.anchor) for e in diagram.edges if e.source == "review"}
    assert out == {("fleet", "approved = true", "start"), ("rolled_back", "approved = false / timeout 1h 0m", "start")}
    skip = next(e for e in diagram.edges if e.target == "rolled_back")
    assert not re.fullmatch(r"M (\d+) \d+ L \1 \d+", skip.path)  # skips a row: bent, beside the column
