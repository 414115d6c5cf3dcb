"""The dashboard's view models: pure functions of a chart, its snapshot, what the store read, and the time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stateservice.core.chart import Snapshot
from stateservice.core.slots import Slot
from stateservice.dashboard import view
from tests.support.charts import chart, final, increment, load, timed

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
ROLLOUT = load(
    chart(
        "payments",
        "canary",
        "  - name: canary\n    func: increment\n    current: {key: hosts, value: 0}\n"
        "    target: {name: soak, when: {key: hosts, value: 4}}\n    concurrency: 2\n    max_failures: 50%\n",
        timed("soak", "fleet", "elapsed", "30m"),
        increment("fleet", "done", 12, start=2),
        final("done"),
    ),
    "payments.yaml",
)


def snap(state: str, entered: datetime = NOW, halted: str | None = None) -> Snapshot:
    return Snapshot(state, 0, entered, halted, NOW if halted else None)


def test_progress_counts_each_increment_state_from_its_start_against_its_target() -> None:
    found = view.progress(ROLLOUT, snap("canary"), {"canary": 1, "fleet": 5})
    assert found == (view.Progress("canary", 1, 4, True), view.Progress("fleet", 3, 10, False))
    assert [p.percent for p in found] == [25, 30]


def test_a_state_never_visited_shows_nothing_counted() -> None:
    assert view.progress(ROLLOUT, snap("canary"), {})[1] == view.Progress("fleet", 0, 10, False)


def test_percent_stays_within_0_and_100() -> None:
    assert view.Progress("a", 7, 4, True).percent == 100
    assert view.Progress("a", -1, 4, True).percent == 0
    assert view.Progress("a", 0, 0, True).percent == 100


def test_a_summary_has_slots_and_the_failure_budget_of_the_current_state() -> None:
    summary = view.summarize(ROLLOUT, snap("canary"), {"canary": 1}, held=2, failures=1, now=NOW)
    assert summary.slots == view.Limit(2, 2)
    assert summary.failures == view.Limit(1, 2)  # 50% of 4
    assert summary.status == "running" and summary.due_at is None and summary.due_in is None


def test_failures_without_a_budget_are_still_counted() -> None:
    summary = view.summarize(ROLLOUT, snap("fleet"), {}, held=0, failures=3, now=NOW)
    assert summary.slots is None
    assert summary.failures == view.Limit(3, None)
    assert view.summarize(ROLLOUT, snap("fleet"), {}, held=0, failures=0, now=NOW).failures is None


def test_a_time_state_says_when_it_falls_due() -> None:
    summary = view.summarize(ROLLOUT, snap("soak", NOW - timedelta(minutes=10)), {}, 0, 0, NOW)
    assert summary.due_at == NOW + timedelta(minutes=20)
    assert summary.due_in == "20m 0s"


def test_the_status_is_a_word_halted_first() -> None:
    assert view.summarize(ROLLOUT, snap("canary", halted="errors"), {}, 0, 0, NOW).status == "halted"
    assert view.summarize(ROLLOUT, snap("done"), {}, 0, 0, NOW).status == "done"
    waiting = view.summarize(ROLLOUT, snap("canary"), {}, 0, 0, NOW, approval={"id": "a"})
    assert waiting.status == "waiting"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(-5, "0s"), (0, "0s"), (45, "45s"), (200, "3m 20s"), (7500, "2h 5m"), (3 * 86400 + 4 * 3600, "3d 4h")],
)
def test_durations_are_short(seconds: float, shown: str) -> None:
    assert view.duration(seconds) == shown


def test_select_filters_by_name_sorts_and_pages() -> None:
    names = [f"w{i:03}" for i in range(250)] + ["other"]
    page, number, total = view.select(names, "W", 2)
    assert (page[0], page[-1], len(page), number, total) == ("w100", "w199", 100, 2, 250)
    assert view.select(names, "", 99)[1] == 3  # clamped to the last page
    assert view.select(names, "nothing", 1) == ([], 1, 0)
    assert view.pages(0) == 1 and view.pages(100) == 1 and view.pages(101) == 2


def test_the_chart_page_names_the_redis_key_and_keeps_the_history_newest_first() -> None:
    summary = view.summarize(ROLLOUT, snap("canary"), {"canary": 1}, 1, 0, NOW)
    slot = Slot("web-2", NOW, NOW + timedelta(minutes=10))
    history = [
        {"id": "2-0", "at": "t2", "from": "canary", "to": "canary", "cause": "slot", "host": "web-2", "actor": "alice"},
        {"id": "1-0", "at": "t1", "from": None, "to": "canary", "cause": "reset", "actor": "-"},
    ]
    page = view.chart_page(summary, ["web-9", "web-1"], [], [slot], [], history, {"id": None})
    assert page.redis_key == "stateservice:{payments}"
    assert page.redis_cli == "redis-cli HGETALL 'stateservice:{payments}'"
    assert page.hosts.counted == ("web-1", "web-9") and page.hosts.holding == (slot,)
    assert [(e.cause, e.move, e.actor) for e in page.history] == [("slot", False, "alice"), ("reset", True, "-")]


def test_the_version_changes_with_the_data_but_not_with_the_countdown() -> None:
    summary = view.as_json(view.summarize(ROLLOUT, snap("soak"), {}, 0, 0, NOW))
    later = view.as_json(view.summarize(ROLLOUT, snap("soak"), {}, 0, 0, NOW + timedelta(seconds=5)))
    assert summary["due_in"] != later["due_in"] and summary["status"] == "running"
    assert view.version(summary) == view.version(later)
    moved = view.as_json(view.summarize(ROLLOUT, snap("fleet"), {}, 0, 0, NOW))
    assert view.version(moved) != view.version(summary)
    overview = view.Overview((view.summarize(ROLLOUT, snap("soak"), {}, 0, 0, NOW),), "", 1, 1, 1)
    assert view.overview_json(overview)["charts"][0]["status"] == "running"


def test_the_version_does_not_change_with_the_leaders_renewals() -> None:
    data = {"leader": {"id": "host-a", "pid": 42, "expires_at": "2026-12-03T08:00:10Z"}, "history": []}
    renewed = {**data, "leader": {**data["leader"], "expires_at": "2026-12-03T08:00:20Z"}}
    assert view.version(renewed) == view.version(data)
    assert view.version({**data, "leader": {**data["leader"], "id": "host-b"}}) != view.version(data)
