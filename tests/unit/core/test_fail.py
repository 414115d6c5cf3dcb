"""rules.fail: a failure is recorded once a host and visit, and the halt comes exactly at the budget."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateservice.core import rules
from stateservice.core.budget import parse_budget
from stateservice.core.chart import Chart
from stateservice.errors import Halted, NotCurrent, NotReportable
from tests.support.charts import load

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def chart(budget: str, target: int = 20) -> Chart:
    return load(
        "current_state: canary\nstates:\n"
        "  - name: canary\n    func: increment\n    current: {key: hosts, value: 0}\n"
        f"    target: {{name: done, when: {{key: hosts, value: {target}}}}}\n    max_failures: {budget}\n"
        "  - name: done\n",
        path="roll.yaml",
    )


@given(
    st.sampled_from(["1", "3", "10%", "50%"]),
    st.integers(1, 40),
    st.lists(st.sampled_from([f"h{n}" for n in range(12)]), max_size=40),
)
def test_the_chart_halts_exactly_when_distinct_failures_reach_the_budget(
    budget: str, target: int, hosts: list[str]
) -> None:
    c = chart(budget, target)
    limit = parse_budget(int(budget) if budget.isdigit() else budget).limit(target)
    snap = rules.initial(c, T0)
    failed: set[str] = set()
    for host in hosts:
        if snap.halted is not None:
            with pytest.raises(Halted):
                rules.fail(c, snap, "canary", host, T0, failed=failed)
            continue
        outcome = rules.fail(c, snap, "canary", host, T0, failed=failed)
        assert outcome.recorded == (host not in failed)
        if outcome.recorded:
            failed.add(host)
        halts = outcome.snapshot is not None and outcome.snapshot.halted is not None
        assert halts == (outcome.recorded and len(failed) == limit)
        assert [r.cause for r in outcome.records] == (["failure", "halt"] if halts else ["failure"] * outcome.recorded)
        if halts:
            assert outcome.snapshot is not None
            snap = outcome.snapshot
    assert (snap.halted is not None) == (len(failed) >= limit)


def test_a_failure_of_a_state_that_is_not_current_or_not_counted_is_refused() -> None:
    c = chart("1")
    snap = rules.initial(c, T0)
    with pytest.raises(NotCurrent):
        rules.fail(c, rules.enter(c, "done", T0), "canary", "h", T0, failed=set())
    with pytest.raises(NotReportable):
        rules.fail(c, rules.enter(c, "done", T0), "done", "h", T0, failed=set())
    assert rules.fail(c, snap, "canary", "h", T0, failed=set(), reason="exit 3").records[0].reason == "exit 3"
