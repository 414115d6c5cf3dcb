"""Real `stateservice serve` processes sharing one redis-server: one leader, failover, exactly-once time moves.

Every service runs with a short `--lease-ttl` so failover is quick. The tests watch the chart in Redis
directly (never through a GET, which would apply the due moves itself), so a move that happens was
made by the leader.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from stateservice.store import codec
from tests.support import charts
from tests.support.service import ServiceProcess, Services, http, wait_until

pytestmark = pytest.mark.slow

HOSTNAME = socket.gethostname()

# a report opens the soak; the soak moves on by the clock
SOAK = charts.chart(
    "wave",
    "gate",
    charts.increment("gate", "soak", 1),
    charts.timed("soak", "done", "elapsed", "2s"),
    charts.final("done"),
)

TWO_SOAKS = charts.chart(
    "wave",
    "gate",
    charts.increment("gate", "soak1", 1),
    charts.timed("soak1", "soak2", "elapsed", "1s"),
    charts.timed("soak2", "done", "elapsed", "2s"),
    charts.final("done"),
)

LONG_CHAIN = charts.chart(
    "chain",
    "first",
    charts.timed("first", "second", "elapsed", "1h"),
    charts.timed("second", "done", "elapsed", "1h"),
    charts.final("done"),
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def chart_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chart.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def start_all(
    services: Services, chart: Path, redis_url: str, *, ttl: float | None = 1, workers: Sequence[int] = (1, 1, 1)
) -> list[ServiceProcess]:
    """Start one service per entry of `workers` (that many worker processes each), all at once.

    `ttl` is the --lease-ttl (None: the default, 5 s).
    """
    args = [] if ttl is None else ["--lease-ttl", str(ttl)]
    made = [services.make(chart, redis_url=redis_url, workers=n, args=args) for n in workers]
    with ThreadPoolExecutor(len(made)) as pool:
        return list(pool.map(lambda s: s.start(), made))


def worker_pids(service: ServiceProcess) -> set[int]:
    """The pids that serve requests: the process itself with one worker, else the workers it forked."""
    if service.workers == 1:
        return {service.pid}
    return {event["worker_pid"] for event in service.events("worker_spawned")}


def leader(service: ServiceProcess) -> dict[str, Any]:
    status, _, body = http("GET", f"{service.url}/leader", timeout=5)
    assert status == 200, body
    found: dict[str, Any] = json.loads(body)
    return found


def wait_for_leader(alive: Sequence[ServiceProcess], timeout: float, *, other_than: str | None = None) -> str:
    """The id the live services agree leads (one other than `other_than`); fails after `timeout`."""
    seen: list[dict[str, Any]] = []

    def agreed() -> bool:
        seen[:] = [leader(s) for s in alive]
        ids = {found["id"] for found in seen}
        return len(ids) == 1 and None not in ids and other_than not in ids

    assert wait_until(agreed, timeout, interval=0.05), f"no agreed new leader within {timeout}s: {seen}"
    found: str = seen[0]["id"]
    return found


def leading_service(alive: Sequence[ServiceProcess], leader_id: str) -> ServiceProcess:
    pid = int(leader_id.rpartition(":")[2])
    [service] = [s for s in alive if pid in worker_pids(s)]
    return service


def state(plain_sync: redis.Redis, chart: str = "wave") -> str | None:
    found: str | None = plain_sync.hget(f"stateservice:{{{chart}}}", "current_state")
    return found


def wait_for_state(plain_sync: redis.Redis, wanted: str, timeout: float, chart: str = "wave") -> None:
    assert wait_until(lambda: state(plain_sync, chart) == wanted, timeout, interval=0.02), (
        f"{chart} still in {state(plain_sync, chart)!r} after {timeout}s, wanted {wanted!r}"
    )


def records(plain_sync: redis.Redis, chart: str = "wave") -> list[dict[str, str]]:
    """The chart's history stream, oldest first."""
    return [fields for _, fields in plain_sync.xrange(f"stateservice:{{{chart}}}:history")]


def time_moves_logged(alive: Sequence[ServiceProcess], count: int) -> list[dict[str, Any]]:
    """The `chart_transitioned` events of time moves the services logged, once `count` have been read.

    A move is in Redis before its log line reaches us, so this waits (up to 5 s) for the lines.
    """
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        found[:] = [e for s in alive for e in s.events("chart_transitioned") if e.get("cause") == "time"]
        return len(found) >= count

    wait_until(enough, 5)
    return found


def put(service: ServiceProcess, state_name: str, host: str = "web-1") -> None:
    status, _, body = http("PUT", f"{service.url}/charts/wave/state?state={state_name}&host={host}")
    assert status == 200, body


def ts(text: str) -> datetime:
    return codec.read_timestamp(text)


# -- one leader ----------------------------------------------------------------------------------


def test_three_services_one_leader_that_advances_a_time_state_once(
    services: Services, redis_url: str, plain_sync: redis.Redis, tmp_path: Path
) -> None:
    fleet = start_all(services, chart_file(tmp_path, SOAK), redis_url, workers=(1, 2, 1))
    leader_id = wait_for_leader(fleet, 5)
    for service in fleet:  # every worker of every service names the same leader
        for _ in range(4):
            found = leader(service)
            assert (found["id"], found["pid"]) == (leader_id, int(leader_id.rpartition(":")[2]))
            assert ts(found["expires_at"]) > datetime.now(UTC) - timedelta(seconds=1)
    assert leader_id == f"{HOSTNAME}:{found['pid']}"
    assert found["pid"] in set().union(*(worker_pids(s) for s in fleet))
    chief = leading_service(fleet, leader_id)
    assert plain_sync.pttl("stateservice:leader") <= 1000  # --lease-ttl 1

    put(fleet[0], "gate")  # enters soak: due in 2 s; from now on nobody reads the chart
    wait_for_state(plain_sync, "done", 5)

    put_record, time_record = records(plain_sync)
    assert (put_record["from"], put_record["to"], put_record["cause"]) == ("gate", "soak", "put")
    assert (time_record["from"], time_record["to"], time_record["cause"]) == ("soak", "done", "time")
    assert ts(time_record["due_at"]) == ts(put_record["at"]) + timedelta(seconds=2)
    late = ts(time_record["at"]) - ts(time_record["due_at"])
    assert timedelta(0) <= late < timedelta(seconds=1), late
    [logged] = time_moves_logged(fleet, 1)
    assert logged["pid"] == found["pid"]
    assert logged in chief.events("chart_transitioned")
    time.sleep(0.6)  # a few more leader ticks: nothing else happens
    assert len(records(plain_sync)) == 2
    assert len(time_moves_logged(fleet, 1)) == 1


# -- failover ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [1, None], ids=["lease-ttl-1", "default-lease-ttl"])
def test_sigkill_of_the_leader_another_takes_over_within_10_seconds(
    services: Services, redis_url: str, plain_sync: redis.Redis, tmp_path: Path, ttl: float | None
) -> None:
    fleet = start_all(services, chart_file(tmp_path, SOAK), redis_url, ttl=ttl)
    old_id = wait_for_leader(fleet, 5)
    old = leading_service(fleet, old_id)
    survivors = [s for s in fleet if s is not old]

    killed = time.monotonic()
    old.kill()  # SIGKILL: no chance to give the lease up
    new_id = wait_for_leader(survivors, 10, other_than=old_id)
    took = time.monotonic() - killed

    assert took < 10, f"takeover took {took:.1f}s"
    new = leading_service(survivors, new_id)
    assert new_id == f"{HOSTNAME}:{new.pid}"
    assert leader(new)["pid"] == new.pid
    # the new leader does the leader's work: a soak nobody asks about still moves promptly
    put(survivors[0], "gate")
    wait_for_state(plain_sync, "done", 4)
    time_record = records(plain_sync)[-1]
    assert ts(time_record["at"]) - ts(time_record["due_at"]) < timedelta(seconds=1)
    [logged] = time_moves_logged(survivors, 1)
    assert logged["pid"] == new.pid


def test_a_leader_paused_past_its_lease_writes_nothing_twice_when_resumed(
    services: Services, redis_url: str, plain_sync: redis.Redis, tmp_path: Path
) -> None:
    fleet = start_all(services, chart_file(tmp_path, TWO_SOAKS), redis_url)
    old_id = wait_for_leader(fleet, 5)
    old = leading_service(fleet, old_id)
    others = [s for s in fleet if s is not old]

    os.kill(old.pid, signal.SIGSTOP)
    try:
        put(others[0], "gate")  # soak1 falls due in 1 s, while the old leader sleeps; soak2 in 3 s
        new_id = wait_for_leader(others, 10, other_than=old_id)
        wait_for_state(plain_sync, "soak2", 3)  # the new leader moved soak1 on
    finally:
        os.kill(old.pid, signal.SIGCONT)

    # it woke and found out: its renew failed (or a Redis call it had begun timed out meanwhile)
    assert wait_until(lambda: bool(old.events("leader_lost") or old.events("leader_unsure")), 5), old.stderr
    wait_for_state(plain_sync, "done", 5)
    time.sleep(0.6)  # a few more ticks of both: still nothing twice

    history = records(plain_sync)
    assert [(r["from"], r["to"], r["cause"]) for r in history] == [
        ("gate", "soak1", "put"),
        ("soak1", "soak2", "time"),
        ("soak2", "done", "time"),
    ]
    assert ts(history[1]["due_at"]) == ts(history[0]["at"]) + timedelta(seconds=1)
    assert ts(history[2]["due_at"]) == ts(history[1]["due_at"]) + timedelta(seconds=2)
    assert len(time_moves_logged(fleet, 2)) == 2
    assert {found["id"] for found in map(leader, fleet)} == {new_id}  # the woken one did not take it back
    assert json.loads(plain_sync.get("stateservice:leader"))["id"] == new_id


def test_a_leader_stopped_with_sigterm_gives_the_lease_up_at_once(
    services: Services, redis_url: str, plain_sync: redis.Redis, tmp_path: Path
) -> None:
    fleet = start_all(services, chart_file(tmp_path, SOAK), redis_url, ttl=30)
    old_id = wait_for_leader(fleet, 5)
    old = leading_service(fleet, old_id)
    others = [s for s in fleet if s is not old]
    assert plain_sync.pttl("stateservice:leader") > 25_000

    stopping = time.monotonic()
    assert old.stop() == 0
    new_id = wait_for_leader(others, 5, other_than=old_id)
    took = time.monotonic() - stopping

    assert took < 2.0, f"takeover took {took:.1f}s after SIGTERM (the 30 s lease was not given up?)"
    assert old.events("leader_released")
    assert new_id in {f"{HOSTNAME}:{s.pid}" for s in others}


# -- catch-up after downtime ----------------------------------------------------------------------


def test_catch_up_at_start_after_downtime_applies_each_move_with_its_due_time(
    services: Services, redis_url: str, plain_sync: redis.Redis, tmp_path: Path
) -> None:
    chart = chart_file(tmp_path, LONG_CHAIN)
    fleet = start_all(services, chart, redis_url, workers=(1, 1))
    assert state(plain_sync, "chain") == "first"
    for service in fleet:
        assert service.stop() == 0
    # while nothing ran, both soaks fell due: as if `first` had been entered long ago
    plain_sync.hset("stateservice:{chain}", "entered_at", "2024-01-01T00:00:00Z")
    restarted = datetime.now(UTC)

    service = services.start(chart, redis_url=redis_url, args=["--lease-ttl", "1"])
    wait_for_state(plain_sync, "done", 3, chart="chain")  # nobody asked: the start (its leader) caught up

    history = records(plain_sync, "chain")
    assert [(r["from"], r["to"], r["cause"]) for r in history] == [
        ("first", "second", "time"),
        ("second", "done", "time"),
    ]
    assert [ts(r["due_at"]) for r in history] == [T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    assert all(ts(r["at"]) >= restarted - timedelta(seconds=1) for r in history)
    assert ts(plain_sync.hget("stateservice:{chain}", "entered_at")) == T0 + timedelta(hours=2)
    assert len(time_moves_logged([service], 2)) == 2
