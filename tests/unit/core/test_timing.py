"""timing.py and the time rules: durations, instants, due times, then `rules.advance` over chains of time states.

The hypothesis properties drive `advance` with random chains (elapsed and clock states, ending in a
final state, an increment state, or a loop of elapsed states) and random clocks: catch-up after any
downtime must equal having run all along.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stateservice.core import rules
from stateservice.core.chart import Chart, Counter, Func, Snapshot, State, Target, Transition
from stateservice.core.parse import parse
from stateservice.core.timing import due_at, parse_duration, parse_instant
from stateservice.errors import CorruptState
from tests.support import charts

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
NOT_A_DURATION = "is not a duration such as 90s, 10m, 2h, 1d, 1h30m or ISO 8601 PT10M"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def load(text: str, path: str = "timed.yaml") -> Chart:
    """A chart with neither errors nor warnings."""
    result = charts.parsed(text, path)
    assert result.problems == []
    return result.unwrap()


# -- parse_duration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1s", timedelta(seconds=1)),
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("2m30s", timedelta(minutes=2, seconds=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("0h5m", timedelta(minutes=5)),
        ("120m", timedelta(hours=2)),
        ("PT10M", timedelta(minutes=10)),
        ("PT90S", timedelta(seconds=90)),
        ("PT2H", timedelta(hours=2)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("P1D", timedelta(days=1)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("P2DT3H4M5S", timedelta(days=2, hours=3, minutes=4, seconds=5)),
    ],
)
def test_parse_duration_reads_short_and_iso_forms(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["0s", "0m", "0d0h0m0s", "PT0S", "P0D", "PT0M", "PT0.0000001S"])
def test_parse_duration_refuses_zero(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)

    assert str(caught.value) == f"{text!r} is not a positive duration"


@pytest.mark.parametrize(
    "text",
    ["", "5", "-5m", "-PT5M", "+5m", "soon", "PT", "P", "P1DT", "T5M", "5 m", "5M", "5min", "1m1h", "1d1d",
     "pt10m", "PT1e3S", "P1.5D", "1.5h", "P1W", "P1Y", "3000-01-01T12:00:00Z"],
)  # fmt: skip
def test_parse_duration_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)

    assert str(caught.value) == f"{text!r} {NOT_A_DURATION}"


@pytest.mark.parametrize("text", ["99999999999d", "1" + "0" * 400 + "s", "PT" + "9" * 400 + "S"])
def test_parse_duration_refuses_an_enormous_duration_with_value_error(text: str) -> None:
    # parse() reports ValueError as a problem; anything else escapes and crashes `validate` and start-up.
    with pytest.raises(ValueError, match=f"^{text!r} "):
        parse_duration(text)


def test_every_accepted_duration_can_be_counted_from_an_ordinary_entry_time() -> None:
    # A chart that parses must not crash the rules later: 999999999d fits a timedelta, but
    # entered_at + 999999999d does not fit a datetime, so next_due/advance raised OverflowError.
    text = """
        current_state: soak
        states:
          - name: soak
            func: time
            target: {name: done, when: {key: elapsed, value: 999999999d}}
          - name: done
        """
    result = parse(textwrap.dedent(text).lstrip("\n"), "x.yaml")
    if result.chart is None:  # rejecting it with a message is one fix
        assert [p.line for p in result.errors] == [5]
        return
    snap = rules.initial(result.chart, T0)  # handling it in the rules is the other
    assert rules.advance(result.chart, snap, T0 + timedelta(days=365)) == (snap, [])
    due = rules.next_due(result.chart, snap)
    assert due is None or due > T0 + timedelta(days=365)


# -- parse_instant ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3000-01-01T12:00:00Z", datetime(3000, 1, 1, 12, tzinfo=UTC)),
        ("3000-01-01T12:00:00z", datetime(3000, 1, 1, 12, tzinfo=UTC)),
        ("3000-01-01T12:00Z", datetime(3000, 1, 1, 12, tzinfo=UTC)),
        ("3000-01-01 12:00:00Z", datetime(3000, 1, 1, 12, tzinfo=UTC)),
        ("3000-01-01T12:00:00+00:00", datetime(3000, 1, 1, 12, tzinfo=UTC)),
        ("3000-01-01T12:00:00+02:00", datetime(3000, 1, 1, 10, tzinfo=UTC)),
        ("3000-01-01T12:00:00-05:30", datetime(3000, 1, 1, 17, 30, tzinfo=UTC)),
        ("3000-01-01T00:30:00+01:00", datetime(2999, 12, 31, 23, 30, tzinfo=UTC)),
        ("2030-06-01T08:00:00.123456Z", datetime(2030, 6, 1, 8, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_parse_instant_gives_aware_utc_for_absolute_times(text: str, expected: datetime) -> None:
    for zone in (UTC, BERLIN, timezone(timedelta(hours=-7))):  # the zone only matters for naive times
        instant, naive = parse_instant(text, zone)
        assert (instant, naive) == (expected, False)
        assert instant.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("3000-01-01T12:00:00", UTC, datetime(3000, 1, 1, 12, tzinfo=UTC)),
        ("3000-01-01T12:00:00", BERLIN, datetime(3000, 1, 1, 11, tzinfo=UTC)),  # CET
        ("3000-07-01T12:00:00", BERLIN, datetime(3000, 7, 1, 10, tzinfo=UTC)),  # CEST
        ("3000-07-01 12:00:00", BERLIN, datetime(3000, 7, 1, 10, tzinfo=UTC)),
        ("2030-07-01T12:00:00", ZoneInfo("America/New_York"), datetime(2030, 7, 1, 16, tzinfo=UTC)),
        ("2030-07-01T12:00:00", timezone(timedelta(hours=5, minutes=30)), datetime(2030, 7, 1, 6, 30, tzinfo=UTC)),
    ],
)
def test_parse_instant_reads_naive_times_in_the_zone(text: str, zone: Any, expected: datetime) -> None:
    instant, naive = parse_instant(text, zone)

    assert (instant, naive) == (expected, True)
    assert instant.tzinfo is UTC


def test_a_naive_time_in_a_gap_does_not_exist() -> None:
    with pytest.raises(ValueError) as caught:
        parse_instant("2026-03-29T02:30:00", BERLIN)

    assert str(caught.value) == "2026-03-29T02:30:00 does not exist in time zone Europe/Berlin (the clocks skip it)"


@pytest.mark.parametrize("text", ["2026-03-29T02:00:00", "2026-03-29T02:59:59"])
def test_every_time_in_the_gap_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="does not exist in time zone Europe/Berlin"):
        parse_instant(text, BERLIN)


def test_the_gap_edges_exist() -> None:
    assert parse_instant("2026-03-29T01:59:59", BERLIN) == (datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC), True)
    assert parse_instant("2026-03-29T03:00:00", BERLIN) == (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), True)


def test_a_naive_time_in_an_overlap_is_its_first_occurrence() -> None:
    # 02:00-03:00 happens twice on 2026-10-25 in Berlin: first in CEST (UTC+2), then in CET (UTC+1).
    assert parse_instant("2026-10-25T02:30:00", BERLIN) == (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), True)
    assert parse_instant("2026-10-25T02:00:00", BERLIN) == (datetime(2026, 10, 25, 0, 0, tzinfo=UTC), True)
    assert parse_instant("2026-10-25T03:00:00", BERLIN) == (datetime(2026, 10, 25, 2, 0, tzinfo=UTC), True)


@pytest.mark.parametrize("text", ["3000-01-01", "tomorrow", "", "12:00:00", "20300101"])
def test_parse_instant_needs_a_date_and_a_time(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_instant(text, UTC)

    assert str(caught.value) == ("expected a date and a time, such as 3000-01-01T12:00:00 or 3000-01-01T12:00:00Z")


@pytest.mark.parametrize("text", ["3000-13-01T00:00:00", "3000-01-01T24:00:00", "next tuesday", "3000-01-01Tnoon"])
def test_parse_instant_refuses_impossible_dates(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text, UTC)


@pytest.mark.parametrize(
    ("text", "zone"),
    [
        ("0001-01-01T00:00:00+01:00", UTC),
        ("9999-12-31T23:59:59-01:00", UTC),
        ("0001-01-01T00:00:00", BERLIN),
    ],
)
def test_parse_instant_refuses_an_instant_outside_the_datetime_range_with_value_error(text: str, zone: Any) -> None:
    # In UTC these fall before year 1 or after year 9999: astimezone raised OverflowError, which
    # escapes parse() (it reports only ValueError) and crashes `validate` and start-up.
    with pytest.raises(ValueError):
        parse_instant(text, zone)


# -- due_at, next_due ------------------------------------------------------------------------


def clock_state(due: datetime, name: str = "wait", to: str = "done") -> State:
    return State(name, Func.TIME, None, Target(to, "clock", due.isoformat(), due=due))


def elapsed_state(after: timedelta, name: str = "soak", to: str = "done") -> State:
    return State(name, Func.TIME, None, Target(to, "elapsed", f"{int(after.total_seconds())}s", after=after))


def test_a_clock_state_is_due_at_its_time() -> None:
    assert due_at(clock_state(at(60)), T0) == at(60)
    assert due_at(clock_state(at(60)), at(59)) == at(60)


def test_a_clock_state_is_never_due_before_it_was_entered() -> None:
    assert due_at(clock_state(at(60)), at(60)) == at(60)
    assert due_at(clock_state(at(60)), at(61)) == at(61)
    assert due_at(clock_state(at(-600)), T0) == T0


def test_an_elapsed_state_is_due_that_long_after_it_was_entered() -> None:
    assert due_at(elapsed_state(timedelta(minutes=10)), T0) == at(10)
    assert due_at(elapsed_state(timedelta(minutes=10)), at(5)) == at(15)
    assert due_at(elapsed_state(timedelta(milliseconds=1)), T0) == T0 + timedelta(milliseconds=1)


def test_states_that_do_not_move_by_the_clock_are_never_due() -> None:
    counting = State("build", Func.INCREMENT, Counter("n", 0), Target("done", "n", 3))

    assert due_at(counting, T0) is None
    assert due_at(State("done", None), T0) is None


@given(
    st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=30)),
    st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=30)),
)
def test_a_clock_due_time_is_the_later_of_its_time_and_the_entry(due: timedelta, entered: timedelta) -> None:
    when = due_at(clock_state(T0 + due), T0 + entered)

    assert when == max(T0 + due, T0 + entered)
    assert when is not None and when >= T0 + entered


# -- advance: examples -----------------------------------------------------------------------

DOWNTIME = load(
    """
    current_state: wait
    states:
      - name: wait
        func: time
        target: {name: soak, when: {key: clock, value: 2030-01-01T13:00:00Z}}
      - name: soak
        func: time
        target: {name: build, when: {key: elapsed, value: 30m}}
      - name: build
        func: increment
        current: {key: hosts, value: 2}
        target: {name: done, when: {key: hosts, value: 5}}
      - name: done
    """
)

BLINK = load(
    """
    current_state: on
    states:
      - name: on
        func: time
        target: {name: off, when: {key: elapsed, value: 10m}}
      - name: off
        func: time
        target: {name: on, when: {key: elapsed, value: PT5M}}
    """,
    "blink.yaml",
)


def test_next_due_of_each_kind_of_state() -> None:
    assert rules.next_due(DOWNTIME, Snapshot("wait", 0, T0)) == at(60)
    assert rules.next_due(DOWNTIME, Snapshot("soak", 0, at(70))) == at(100)
    assert rules.next_due(DOWNTIME, Snapshot("build", 0, T0)) is None
    assert rules.next_due(DOWNTIME, Snapshot("done", 0, T0)) is None


def test_next_due_on_a_corrupt_snapshot() -> None:
    with pytest.raises(CorruptState):
        rules.next_due(DOWNTIME, Snapshot("ghost", 0, T0))


def test_nothing_moves_before_the_due_time() -> None:
    snap = Snapshot("wait", 0, T0)

    assert rules.advance(DOWNTIME, snap, at(59)) == (snap, [])
    assert rules.advance(DOWNTIME, snap, at(60) - timedelta(microseconds=1)) == (snap, [])


def test_a_state_moves_exactly_at_its_due_time() -> None:
    snap, moves = rules.advance(DOWNTIME, Snapshot("wait", 0, T0), at(60))

    assert moves == [Transition("timed", "wait", "soak", "time", at(60), None, due_at=at(60))]
    assert snap == Snapshot("soak", 0, at(60))


def test_a_late_move_is_applied_now_but_enters_at_the_due_time() -> None:
    snap, moves = rules.advance(DOWNTIME, Snapshot("wait", 0, T0), at(75))

    assert moves == [Transition("timed", "wait", "soak", "time", at(75), None, due_at=at(60))]
    assert snap == Snapshot("soak", 0, at(60))  # soak counts its 30 minutes from 13:00, not from 13:15
    assert rules.next_due(DOWNTIME, snap) == at(90)


def test_a_chain_that_fell_due_during_downtime_advances_through_each_state() -> None:
    # The service was down from 12:00 to 17:00: wait fell due at 13:00, soak 30 minutes later.
    snap, moves = rules.advance(DOWNTIME, Snapshot("wait", 0, T0), at(300))

    assert moves == [
        Transition("timed", "wait", "soak", "time", at(300), None, due_at=at(60)),
        Transition("timed", "soak", "build", "time", at(300), None, due_at=at(90)),
    ]
    assert snap == Snapshot("build", 2, at(90))  # entered at its due time, its counter at the start value


def test_advance_stops_at_an_increment_state_and_a_final_state() -> None:
    build = Snapshot("build", 3, at(90))
    done = Snapshot("done", 0, at(90))

    assert rules.advance(DOWNTIME, build, at(10_000)) == (build, [])
    assert rules.advance(DOWNTIME, done, at(10_000)) == (done, [])


def test_a_clock_time_already_past_when_the_state_is_entered_moves_at_entry() -> None:
    snap, moves = rules.advance(DOWNTIME, Snapshot("wait", 0, at(120)), at(121))

    assert [(m.from_state, m.to_state, m.due_at) for m in moves] == [("wait", "soak", at(120))]
    assert snap == Snapshot("soak", 0, at(120))


def test_an_elapsed_loop_advances_every_round_that_fits_before_now() -> None:
    snap, moves = rules.advance(BLINK, Snapshot("on", 0, T0), at(47))

    assert [(m.from_state, m.to_state, m.due_at) for m in moves] == [
        ("on", "off", at(10)),
        ("off", "on", at(15)),
        ("on", "off", at(25)),
        ("off", "on", at(30)),
        ("on", "off", at(40)),
        ("off", "on", at(45)),
    ]
    assert all(m.at == at(47) and m.cause == "time" and m.chart == "blink" for m in moves)
    assert snap == Snapshot("on", 0, at(45))
    assert rules.next_due(BLINK, snap) == at(55)


def test_an_elapsed_loop_stops_at_the_limit_and_goes_on_next_time() -> None:
    snap, moves = rules.advance(BLINK, Snapshot("on", 0, T0), at(24 * 60), limit=7)

    assert [m.due_at for m in moves] == [at(m) for m in (10, 15, 25, 30, 40, 45, 55)]
    assert snap == Snapshot("off", 0, at(55))
    assert rules.next_due(BLINK, snap) == at(60)  # still due: the rest waits for the next call

    again, more = rules.advance(BLINK, snap, at(24 * 60), limit=3)
    assert [(m.from_state, m.due_at) for m in more] == [("off", at(60)), ("on", at(70)), ("off", at(75))]
    assert again == Snapshot("on", 0, at(75))


def test_the_default_limit_bounds_one_call() -> None:
    snap, moves = rules.advance(BLINK, Snapshot("on", 0, T0), T0 + timedelta(days=365))

    assert len(moves) == rules.MAX_CHAIN
    assert snap.entered_at == moves[-1].due_at


def test_advance_on_a_corrupt_snapshot() -> None:
    with pytest.raises(CorruptState):
        rules.advance(DOWNTIME, Snapshot("ghost", 0, T0), at(1))


# -- hypothesis: random chains of time states ------------------------------------------------

LIMIT = 60  # small, so that fast elapsed loops reach it
seconds = st.integers(1, 3 * 24 * 3600)
offsets = st.integers(-2 * 24 * 3600, 10 * 24 * 3600)  # clock times around T0, seconds


def duration_text(total: int, style: int) -> str:
    """One of the ways to write `total` seconds."""
    if style == 0:
        return f"{total}s"
    if style == 1:
        return f"PT{total}S"
    d, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if style == 2:
        return "".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v)
    return f"P{d}DT{h}H{m}M{s}S"


@st.composite
def time_chain_docs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid chart document: time states s0..sN in a chain, then a final state, an increment state, or a loop
    back into a run of elapsed states."""
    n = draw(st.integers(1, 6))
    names = [f"s{i}" for i in range(n)]
    states: list[dict[str, Any]] = []
    for name in names:
        if draw(st.booleans()):
            value = duration_text(draw(seconds), draw(st.integers(0, 3)))
            states.append({"name": name, "func": "time", "target": {"when": {"key": "elapsed", "value": value}}})
        else:
            when = T0 + timedelta(seconds=draw(offsets))
            value = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            states.append({"name": name, "func": "time", "target": {"when": {"key": "clock", "value": value}}})
    elapsed_tail = n
    while elapsed_tail > 0 and states[elapsed_tail - 1]["target"]["when"]["key"] == "elapsed":
        elapsed_tail -= 1
    endings = ["final", "increment"] + (["loop"] if elapsed_tail < n - 1 else [])  # a time state may not self-loop
    ending = draw(st.sampled_from(endings))
    targets = [*names[1:], "end"]
    if ending == "loop":
        targets[-1] = names[draw(st.integers(elapsed_tail, n - 2))]
    for state, target in zip(states, targets, strict=True):
        state["target"] = {"name": target, **state["target"]}
    if ending == "increment":
        start = draw(st.integers(-2, 3))
        states.append(
            {
                "name": "end",
                "func": "increment",
                "current": {"key": "hosts", "value": start},
                "target": {"name": "done", "when": {"key": "hosts", "value": start + 1}},
            }
        )
        states.append({"name": "done"})
    elif ending == "final":
        states.append({"name": "end"})
    return {"current_state": "s0", "states": states}


def to_chart(doc: dict[str, Any]) -> Chart:
    """The chart a document describes, built directly (no YAML), for speed."""
    states = []
    for s in doc["states"]:
        if "func" not in s:
            states.append(State(s["name"], None))
        elif s["func"] == "increment":
            cur, tgt = s["current"], s["target"]
            counter = Counter(cur["key"], cur["value"])
            states.append(State(s["name"], Func.INCREMENT, counter, Target(tgt["name"], "hosts", tgt["when"]["value"])))
        else:
            tgt, key, value = s["target"], s["target"]["when"]["key"], s["target"]["when"]["value"]
            if key == "elapsed":
                target = Target(tgt["name"], key, value, after=parse_duration(value))
            else:
                target = Target(tgt["name"], key, value, due=datetime.fromisoformat(value))
            states.append(State(s["name"], Func.TIME, None, target))
    return Chart(name="gen", initial=doc["current_state"], states=tuple(states))


@st.composite
def starts(draw: st.DrawFn, chart: Chart) -> Snapshot:
    """A snapshot in one of the chain's time states, entered around T0."""
    timed = [s for s in chart.states if s.func is Func.TIME]
    state = draw(st.sampled_from(timed))
    return Snapshot(state.name, 0, T0 + timedelta(seconds=draw(st.integers(-3600, 3600))))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Chart, Snapshot, datetime]:
    chart = to_chart(draw(time_chain_docs()))
    snap = draw(starts(chart))
    now = T0 + timedelta(seconds=draw(st.integers(-3600, 14 * 24 * 3600)), microseconds=draw(st.integers(0, 10**6)))
    return chart, snap, now


def key(move: Transition) -> tuple[str, str, datetime | None]:
    return move.from_state, move.to_state, move.due_at


def target_of(chart: Chart, name: str) -> Target:
    state = chart.state(name)
    assert state is not None and state.func is Func.TIME and state.target is not None
    return state.target


@given(time_chain_docs())
def test_generated_chains_are_charts_parse_accepts(doc: dict[str, Any]) -> None:
    result = parse(yaml.safe_dump(doc, sort_keys=False), "gen.yaml")

    assert result.problems == []
    parsed, direct = result.unwrap(), to_chart(doc)
    assert parsed.initial == direct.initial
    assert [(s.name, s.func, s.counter, s.target) for s in parsed.states] == [
        (s.name, s.func, s.counter, s.target) for s in direct.states
    ]


@settings(max_examples=200)
@given(scenarios())
def test_every_move_is_due_by_now_and_follows_the_targets(scenario: tuple[Chart, Snapshot, datetime]) -> None:
    chart, snap, now = scenario

    after, moves = rules.advance(chart, snap, now, limit=LIMIT)

    assert len(moves) <= LIMIT
    where = snap.state
    for move in moves:
        assert move.due_at is not None and move.due_at <= now
        assert (move.chart, move.cause, move.at, move.host) == ("gen", "time", now, None)
        assert move.from_state == where
        assert move.to_state == target_of(chart, where).name
        where = move.to_state
    assert after.state == where
    assert [m.due_at for m in moves] == sorted(m.due_at for m in moves if m.due_at)  # in time order


@settings(max_examples=200)
@given(scenarios())
def test_after_advance_nothing_is_due_unless_the_limit_was_hit(scenario: tuple[Chart, Snapshot, datetime]) -> None:
    chart, snap, now = scenario

    after, moves = rules.advance(chart, snap, now, limit=LIMIT)

    due = rules.next_due(chart, after)
    if len(moves) < LIMIT:
        assert due is None or due > now
        assert rules.advance(chart, after, now, limit=LIMIT) == (after, [])  # idempotent
    else:
        assert after.entered_at == moves[-1].due_at
    if due is None:
        state = chart.state(after.state)
        assert state is not None and state.func is not Func.TIME


@settings(max_examples=200)
@given(scenarios(), st.lists(st.integers(0, 14 * 24 * 3600), min_size=1, max_size=4))
def test_catching_up_in_steps_equals_catching_up_once(
    scenario: tuple[Chart, Snapshot, datetime], steps: list[int]
) -> None:
    chart, snap, now = scenario
    nows = sorted({now - timedelta(seconds=s) for s in steps} | {now})  # earlier runs, then `now`

    once, once_moves = rules.advance(chart, snap, now, limit=LIMIT)
    stepped, stepped_moves = snap, []
    for t in nows:
        stepped, more = rules.advance(chart, stepped, t, limit=LIMIT)
        assert all(m.at == t for m in more)
        stepped_moves += more

    if len(once_moves) < LIMIT:
        assert stepped == once
        assert [key(m) for m in stepped_moves] == [key(m) for m in once_moves]
    else:  # the single call stopped early: it did a prefix of what the steps did
        assert [key(m) for m in stepped_moves][: len(once_moves)] == [key(m) for m in once_moves]


@settings(max_examples=200)
@given(scenarios())
def test_each_state_is_entered_at_its_predecessors_due_time(scenario: tuple[Chart, Snapshot, datetime]) -> None:
    chart, snap, now = scenario

    _, moves = rules.advance(chart, snap, now, limit=LIMIT)

    current, entered = snap, snap.entered_at
    for move in moves:  # one move at a time: the snapshot after each move is entered at that move's due_at
        target = target_of(chart, current.state)
        if target.after is not None:
            assert move.due_at == entered + target.after
        else:
            assert target.due is not None and move.due_at == max(target.due, entered)
        current, [single] = rules.advance(chart, current, now, limit=1)
        assert key(single) == key(move)
        assert current.state == move.to_state
        assert current.entered_at == move.due_at
        state = chart.state(current.state)
        assert state is not None and current.count == rules.start_count(state)
        entered = current.entered_at
    assert rules.advance(chart, snap, now, limit=LIMIT)[0] == current


@settings(max_examples=200)
@given(scenarios())
def test_advance_is_idempotent(scenario: tuple[Chart, Snapshot, datetime]) -> None:
    chart, snap, now = scenario

    after, moves = rules.advance(chart, snap, now, limit=LIMIT)
    again, more = rules.advance(chart, after, now, limit=LIMIT)

    if len(moves) < LIMIT:
        assert (again, more) == (after, [])
    assert rules.advance(chart, snap, now, limit=LIMIT) == (after, moves)  # pure: same input, same answer
