"""rules.py on approval states: gates wait (awaiting_approval), reports are refused, the timeout moves the chart like a
time state, and `resume` picks the next state from a person's input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from stateservice.core import rules
from stateservice.core.chart import Snapshot, Transition
from stateservice.errors import AwaitingApproval, Halted, NotCurrent, NotReportable
from tests.support import charts

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

load = partial(charts.load, path="release.yaml")

CHART = load(
    """
    current_state: canary
    states:
      - name: canary
        func: increment
        current: {key: hosts, value: 0}
        target: {name: bake, when: {key: hosts, value: 1}}
      - name: bake
        func: time
        target: {name: ask, when: {key: elapsed, value: 1h}}
      - name: ask
        func: approval
        choices:
          - {when: {approved: true, ticket: T-1}, next: fleet}
          - {when: {approved: true}, next: again}
          - {when: {approved: false}, next: rollback}
        default: hold
        timeout: {after: 2h, next: rollback}
      - name: again
        func: approval
        choices: [{when: {approved: true}, next: fleet}]
        timeout: {after: 30m, next: bake}
      - name: hold
        func: approval
        default: fleet
      - name: fleet
      - name: rollback
    """
)


def in_state(state: str, entered: datetime = T0, **fields: object) -> Snapshot:
    return Snapshot(state, 0, entered, **fields)  # type: ignore[arg-type]


# -- gates -----------------------------------------------------------------------------------


def test_a_gate_on_the_approval_state_waits_and_points_at_the_continuation() -> None:
    with pytest.raises(AwaitingApproval) as caught:
        rules.check(CHART, in_state("ask", continuation="c0ffee"), "ask")

    error = caught.value
    assert (error.status, error.code) == (406, "awaiting_approval")
    assert error.body() == {
        "error": "awaiting_approval",
        "message": "state 'ask' of chart 'release' waits for an approval; resume it with POST /continuations/c0ffee",
        "status": 406,
        "chart": "release",
        "state": "ask",
        "current_state": "ask",
        "continuation": "/continuations/c0ffee",
    }
    assert error.headers == {}  # no Retry-After: nobody can guess when a person answers


def test_a_gate_on_an_approval_state_without_a_continuation_yet_still_waits() -> None:
    with pytest.raises(AwaitingApproval) as caught:
        rules.check(CHART, in_state("ask"), "ask")

    assert caught.value.message == "state 'ask' of chart 'release' waits for an approval"
    assert caught.value.body()["continuation"] is None
    assert "Retry-After" not in caught.value.headers


@pytest.mark.parametrize("gate", ["canary", "bake", "fleet", "again", "hold"])
def test_a_gate_on_another_state_is_not_current_and_names_the_approval_state(gate: str) -> None:
    with pytest.raises(NotCurrent) as caught:
        rules.check(CHART, in_state("ask", continuation="c0ffee"), gate)

    assert caught.value.body()["current_state"] == "ask"
    assert "continuation" not in caught.value.body()


def test_a_gate_on_a_state_after_the_approval_passes_once_resumed() -> None:
    resumed = rules.resume(CHART, in_state("ask", continuation="c0ffee"), "c0ffee", {"approved": False}, T0)
    assert resumed is not None

    rules.check(CHART, resumed[0], "rollback")
    with pytest.raises(NotCurrent):
        rules.check(CHART, resumed[0], "ask")


def test_halted_beats_awaiting() -> None:
    halted = in_state("ask", continuation="c0ffee", halted="an operator stopped it", halted_at=T0)

    with pytest.raises(Halted):
        rules.check(CHART, halted, "ask")
    with pytest.raises(Halted):
        rules.check(CHART, halted, "fleet")


# -- reports ---------------------------------------------------------------------------------


@pytest.mark.parametrize("already", [False, True])
def test_reports_on_an_approval_state_are_refused(already: bool) -> None:
    with pytest.raises(NotReportable) as caught:
        rules.report(CHART, in_state("ask", continuation="c0ffee"), "ask", T0, already_counted=already, host="h1")

    assert (caught.value.status, caught.value.code) == (409, "not_reportable")
    assert caught.value.message == (
        "state 'ask' of chart 'release' waits for an approval (POST /continuations/{id}); reports cannot move it"
    )


def test_failures_on_an_approval_state_are_refused() -> None:
    with pytest.raises(NotReportable):
        rules.fail(CHART, in_state("hold"), "hold", "h1", T0, failed=set())


def test_a_report_naming_another_state_while_awaiting_is_not_current() -> None:
    with pytest.raises(NotCurrent):
        rules.report(CHART, in_state("ask"), "canary", T0)


# -- the timeout -----------------------------------------------------------------------------


def test_next_due_is_the_entry_plus_the_timeout_and_none_without_one() -> None:
    assert rules.next_due(CHART, in_state("ask")) == T0 + 2 * HOUR
    assert rules.next_due(CHART, in_state("again", T0 + HOUR)) == T0 + 90 * timedelta(minutes=1)
    assert rules.next_due(CHART, in_state("hold")) is None  # a default and no timeout: it waits for a person
    assert rules.next_due(CHART, in_state("bake")) == T0 + HOUR
    assert rules.next_due(CHART, in_state("fleet")) is None


def test_nothing_moves_before_the_timeout() -> None:
    snap = in_state("ask", continuation="c0ffee")

    assert rules.advance(CHART, snap, T0 + 2 * HOUR - timedelta(microseconds=1)) == (snap, [])


def test_the_timeout_moves_at_its_due_time_with_cause_timeout() -> None:
    late = T0 + 5 * HOUR
    snap, moves = rules.advance(CHART, in_state("ask", continuation="c0ffee"), late)

    assert moves == [Transition("release", "ask", "rollback", "timeout", late, None, due_at=T0 + 2 * HOUR)]
    assert snap == Snapshot("rollback", 0, T0 + 2 * HOUR)  # entered when it fell due; the continuation is gone


def test_the_timeout_applies_exactly_at_its_due_time() -> None:
    snap, moves = rules.advance(CHART, in_state("ask"), T0 + 2 * HOUR)

    assert [m.cause for m in moves] == ["timeout"] and snap.state == "rollback"


def test_an_approval_without_a_timeout_never_moves_by_the_clock() -> None:
    snap = in_state("hold", continuation="c0ffee")

    assert rules.advance(CHART, snap, T0 + timedelta(days=3650)) == (snap, [])


def test_catch_up_runs_through_a_time_state_into_an_approval_and_out_by_its_timeout() -> None:
    late = T0 + 10 * HOUR
    snap, moves = rules.advance(CHART, in_state("bake"), late)

    assert moves == [
        Transition("release", "bake", "ask", "time", late, None, due_at=T0 + HOUR),
        Transition("release", "ask", "rollback", "timeout", late, None, due_at=T0 + 3 * HOUR),
    ]
    assert snap == Snapshot("rollback", 0, T0 + 3 * HOUR)


def test_catch_up_stops_in_an_approval_state_whose_timeout_is_ahead() -> None:
    snap, moves = rules.advance(CHART, in_state("bake"), T0 + 2 * HOUR)

    assert [(m.from_state, m.to_state, m.cause) for m in moves] == [("bake", "ask", "time")]
    assert snap == Snapshot("ask", 0, T0 + HOUR)  # no continuation: the store makes one on entering
    assert rules.next_due(CHART, snap) == T0 + 3 * HOUR


def test_a_timeout_leading_back_to_a_time_state_cycles_each_at_its_due_time_and_stops_at_the_limit() -> None:
    # again --30m--> bake --1h--> ask: from `again` at T0 the next dues are 0:30, 1:30 (ask entered), ask's at 3:30
    snap, moves = rules.advance(CHART, in_state("again"), T0 + 4 * HOUR)

    assert [(m.to_state, m.cause, m.due_at) for m in moves] == [
        ("bake", "timeout", T0 + timedelta(minutes=30)),
        ("ask", "time", T0 + timedelta(minutes=90)),
        ("rollback", "timeout", T0 + timedelta(minutes=210)),
    ]
    first, some = rules.advance(CHART, in_state("again"), T0 + 4 * HOUR, limit=2)
    assert [m.to_state for m in some] == ["bake", "ask"]
    rest, more = rules.advance(CHART, first, T0 + 4 * HOUR)
    assert [m.to_state for m in more] == ["rollback"] and rest == snap


def test_a_halted_approval_state_still_times_out_and_the_move_ends_the_halt() -> None:
    halted = in_state("ask", continuation="c0ffee", halted="an operator stopped it", halted_at=T0)
    snap, moves = rules.advance(CHART, halted, T0 + 3 * HOUR)

    assert [(m.to_state, m.cause) for m in moves] == [("rollback", "timeout")]
    assert snap.halted is None and snap.halted_at is None


def test_a_halted_approval_state_does_not_move_before_its_timeout() -> None:
    halted = in_state("ask", halted="stop", halted_at=T0)

    assert rules.advance(CHART, halted, T0 + HOUR) == (halted, [])


# -- resume ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"approved": True, "ticket": "T-1"}, "fleet"),  # the first choice, though the second matches too
        ({"ticket": "T-1", "approved": True, "note": "lgtm"}, "fleet"),
        ({"approved": True, "ticket": "T-2"}, "again"),
        ({"approved": True}, "again"),
        ({"approved": False, "ticket": "T-1"}, "rollback"),
        ({"approved": 1}, "hold"),  # JSON equality: 1 is not true, so only the default is left
        ({"approved": "true"}, "hold"),
        ({"approved": None}, "hold"),
        ({}, "hold"),
    ],
)
def test_resume_takes_the_first_matching_choice_else_the_default(given: dict[str, object], expected: str) -> None:
    result = rules.resume(CHART, in_state("ask", continuation="c0ffee"), "c0ffee", given, T0 + HOUR)

    assert result is not None
    snap, move = result
    assert (move.from_state, move.to_state, move.cause) == ("ask", expected, "approval")
    assert snap.state == expected


def test_resume_without_a_match_and_without_a_default_is_none() -> None:
    snap = in_state("again", continuation="c0ffee")

    assert rules.resume(CHART, snap, "c0ffee", {"approved": False}, T0) is None
    assert rules.resume(CHART, snap, "c0ffee", {}, T0) is None
    assert rules.resume(CHART, snap, "c0ffee", {"approved": True}, T0) is not None  # still usable: nothing changed


def test_the_resume_record_has_the_actor_and_the_input_keys_sorted() -> None:
    now = T0 + HOUR
    snap, move = rules.resume(  # type: ignore[misc]
        CHART, in_state("ask", continuation="c0ffee"), "c0ffee", {"ticket": "T-1", "approved": True}, now, "alice"
    )

    assert move == Transition(
        "release", "ask", "fleet", "approval", now, None, actor="alice", reason="input keys: approved, ticket"
    )
    assert snap == Snapshot("fleet", 0, now)  # entered now, no continuation left to use


def test_a_resume_with_no_input_says_so_and_has_no_actor_unless_given() -> None:
    _, move = rules.resume(CHART, in_state("hold", continuation="c0ffee"), "c0ffee", {}, T0)  # type: ignore[misc]

    assert (move.to_state, move.actor, move.reason) == ("fleet", None, "input keys: none")


def test_a_resume_into_another_approval_state_enters_it_without_a_continuation() -> None:
    snap, _ = rules.resume(  # type: ignore[misc]
        CHART, in_state("ask", continuation="c0ffee"), "c0ffee", {"approved": True}, T0 + HOUR
    )

    assert snap == Snapshot("again", 0, T0 + HOUR)  # the store makes the next visit's id
    with pytest.raises(AwaitingApproval):
        rules.check(CHART, snap, "again")
    assert rules.next_due(CHART, snap) == T0 + HOUR + timedelta(minutes=30)


def test_a_resume_into_a_counted_state_starts_its_counter() -> None:
    chart = load(
        """
        current_state: ask
        states:
          - name: ask
            func: approval
            default: wave
          - name: wave
            func: increment
            current: {key: hosts, value: 5}
            target: {name: done, when: {key: hosts, value: 10}}
          - name: done
        """
    )
    snap, _ = rules.resume(chart, Snapshot("ask", 0, T0, continuation="c"), "c", {}, T0)  # type: ignore[misc]

    assert snap == Snapshot("wave", 5, T0)


def test_resume_with_another_continuation_id_is_a_caller_bug() -> None:
    # the store checks `snap.continuation == id` before calling; the core refuses to decide on a stale id
    with pytest.raises(AssertionError):
        rules.resume(CHART, in_state("ask", continuation="new"), "old", {"approved": True}, T0)
    with pytest.raises(AssertionError):
        rules.resume(CHART, in_state("fleet", continuation="c0ffee"), "c0ffee", {}, T0)
