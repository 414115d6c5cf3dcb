"""parse_rollout.py through parse(): a chart's rollout keys and timezone become a Rollout, or `path:line: message`."""

from __future__ import annotations

from datetime import date, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from stateservice.core.budget import Budget
from stateservice.core.chart import DEFAULT_SLOT_TTL, NO_ROLLOUT, Rollout
from stateservice.core.parse import parse
from stateservice.core.windows import Window
from tests.support.charts import text as chart


def rollout_chart(extra: str, final_extra: str = "", top: str = "") -> str:
    """A canary -> done chart whose increment state gets `extra` keys (indented under it) and done `final_extra`."""
    return (
        top
        + "current_state: canary\n"
        + "states:\n"
        + "  - name: canary\n"
        + "    func: increment\n"
        + "    current: {key: hosts, value: 0}\n"
        + "    target: {name: done, when: {key: hosts, value: 20}}\n"
        + "".join(f"    {line}\n" for line in chart(extra).strip("\n").splitlines() if extra)
        + "  - name: done\n"
        + "".join(f"    {line}\n" for line in chart(final_extra).strip("\n").splitlines() if final_extra)
    )


def messages(text: str) -> list[str]:
    return [str(p) for p in parse(text, "x.yaml").problems]


def test_a_state_without_rollout_keys_has_no_rollout() -> None:
    parsed = parse(rollout_chart(""), "x.yaml").unwrap()
    assert parsed.state("canary").rollout is NO_ROLLOUT  # type: ignore[union-attr]
    assert parsed.zone is None


def test_every_rollout_key_is_read() -> None:
    text = rollout_chart(
        """
        concurrency: 5
        slot_ttl: 2m
        max_failures: 10%
        windows:
          - {days: [mon, tue, wed, thu, fri], from: "09:00", to: "17:00"}
          - days: [sat]
            from: "22:00"
            to: "02:00"
        blackouts: [2030-12-24, "2030-12-31"]
        """,
        top="timezone: Europe/Berlin\n",
    )
    parsed = parse(text, "x.yaml")
    assert parsed.problems == []
    canary = parsed.unwrap().state("canary")
    assert canary is not None
    assert canary.rollout == Rollout(
        concurrency=5,
        slot_ttl=timedelta(minutes=2),
        max_failures=Budget(percent=10),
        windows=(Window(frozenset(range(5)), time(9), time(17)), Window(frozenset({5}), time(22), time(2))),
        blackouts=frozenset({date(2030, 12, 24), date(2030, 12, 31)}),
    )
    assert parsed.unwrap().zone == ZoneInfo("Europe/Berlin")


def test_slot_ttl_defaults_to_ten_minutes_and_a_count_budget_is_a_count() -> None:
    canary = parse(rollout_chart("concurrency: 1\nmax_failures: 2"), "x.yaml").unwrap().state("canary")
    assert canary is not None
    assert canary.rollout.slot_ttl == DEFAULT_SLOT_TTL == timedelta(minutes=10)
    assert canary.rollout.max_failures == Budget(count=2)


def test_a_final_state_may_have_windows_but_not_slots_or_budgets() -> None:
    ok = parse(rollout_chart("", final_extra='windows: [{days: [mon], from: "09:00", to: "10:00"}]'), "x.yaml")
    assert ok.problems == []
    assert messages(rollout_chart("", final_extra="concurrency: 2\nmax_failures: 1")) == [
        "x.yaml:8: state 'done': `concurrency` applies to increment states (where hosts report), not a final state",
        "x.yaml:9: state 'done': `max_failures` applies to increment states (where hosts report), not a final state",
    ]


def test_a_time_state_may_not_take_slots() -> None:
    text = (
        "current_state: wait\nstates:\n"
        "  - name: wait\n    func: time\n    target: {name: done, when: {key: elapsed, value: 1h}}\n"
        "    concurrency: 2\n"
        "  - name: done\n"
    )
    assert messages(text) == [
        "x.yaml:6: state 'wait': `concurrency` applies to increment states (where hosts report), not a time state"
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("concurrency: 0", "x.yaml:7: state 'canary': concurrency must be from 1 to 1,000,000, not 0"),
        ("concurrency: many", "x.yaml:7: state 'canary': concurrency must be a whole number, not 'many'"),
        ("slot_ttl: 2m", "x.yaml:7: state 'canary': `slot_ttl` needs `concurrency` (it is how long a slot is held)"),
        (
            "concurrency: 2\nslot_ttl: soon",
            "x.yaml:8: state 'canary': slot_ttl must be a duration such as 90s, 10m, 2h, 1d, 1h30m or ISO 8601 PT10M,"
            " not 'soon'",
        ),
        (
            "max_failures: 0",
            "x.yaml:7: state 'canary': max_failures must be at least 1 (got 0); leave it out for no budget",
        ),
        (
            "max_failures: 200%",
            "x.yaml:7: state 'canary': max_failures '200%' must be a percentage above 0% and at most 100%",
        ),
        (
            "max_failures: [1]",
            "x.yaml:7: state 'canary': max_failures must be a whole number of hosts such as 3, or a"
            " percentage of the target such as 5%",
        ),
        (
            "windows: []",
            "x.yaml:7: state 'canary': `windows` must be a non-empty list of {days: [...], from: HH:MM, to: HH:MM}",
        ),
        (
            'windows:\n  - {days: [mon], from: "09:00", to: "17:00"}\n  - {days: [funday], from: "09:00", to: "17:00"}',
            "x.yaml:9: state 'canary': 'funday' is not a day; days are mon, tue, wed, thu, fri, sat, sun",
        ),
        (
            'windows: [{days: [mon], from: 9:00, to: "17:00"}]',
            "x.yaml:7: state 'canary': a window's 'from' must be quoted (\"HH:MM\"): YAML reads 09:30 unquoted as a"
            " number",
        ),
        (
            "windows: [mon]",
            'x.yaml:7: state \'canary\': a window must be a mapping such as {days: [mon], from: "09:00", to: "17:00"}',
        ),
        (
            "blackouts: [christmas]",
            "x.yaml:7: state 'canary': a blackout is a date such as 2026-12-24, not 'christmas'",
        ),
        (
            "blackouts: 2030-12-24",
            "x.yaml:7: state 'canary': `blackouts` must be a non-empty list of dates such as 2026-12-24",
        ),
    ],
)
def test_bad_rollout_keys_say_where_and_what(extra: str, message: str) -> None:
    assert messages(rollout_chart(extra)) == [message]


def test_several_bad_keys_are_all_reported() -> None:
    assert len(messages(rollout_chart("concurrency: 0\nmax_failures: x\nblackouts: [x]"))) == 3


def test_a_bad_timezone_is_an_error_and_a_good_one_reads_naive_clock_times() -> None:
    assert messages("timezone: Mars/Olympus\n" + rollout_chart("")) == [
        "x.yaml:1: `timezone` 'Mars/Olympus' is not a time zone name such as Europe/Berlin"
        " ('No time zone found with key Mars/Olympus')"
    ]
    text = (
        "timezone: Asia/Tokyo\ncurrent_state: wait\nstates:\n"
        "  - name: wait\n    func: time\n    target: {name: done, when: {key: clock, value: 3000-01-01T09:00:00}}\n"
        "  - name: done\n"
    )
    parsed = parse(text, "x.yaml")
    assert [str(p) for p in parsed.warnings] == [
        "x.yaml:6: warning: state 'wait': 3000-01-01T09:00:00 has no offset, so it is read in the chart's `timezone`"
        " (Asia/Tokyo); add Z or an offset such as +02:00 to make it the same everywhere"
    ]
    wait = parsed.unwrap().state("wait")
    assert wait is not None and wait.target is not None and wait.target.due is not None
    assert wait.target.due.isoformat() == "3000-01-01T00:00:00+00:00"  # 09:00 in Tokyo
