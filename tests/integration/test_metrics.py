"""`GET /metrics`: exact counts across `--workers 2`, transitions, the leader gauge, bounded route labels, auth."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from stateservice.config import Config
from stateservice.core.parse import parse
from stateservice.security.tokens import Scope, Token, Tokens, hash_secret
from stateservice.server import eventloop
from stateservice.telemetry import metrics
from stateservice.web.app import Loaded, create_app
from tests.support.service import REPO, ServiceProcess, Services, http

CHART = REPO / "examples" / "states.yaml"  # chart `states`: green_state -> red_state -> blue_state, one report each


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called `name` in a text exposition: (labels, value)."""
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(value for found, value in samples(text, name) if labels.items() <= found.items())


@pytest.fixture
def two_workers(services: Services, redis_url: str) -> Iterator[ServiceProcess]:
    service = services.start(CHART, redis_url=redis_url, workers=2)
    yield service
    assert service.stop() == 0  # SIGTERM: the service removes its metrics dir


def scrape(service: ServiceProcess) -> str:
    status, headers, body = http("GET", f"{service.url}/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    return body


def test_counts_from_both_workers_add_up_exactly(two_workers: ServiceProcess) -> None:
    url = f"{two_workers.url}/charts/states/state?state=green_state"
    n = 60
    with ThreadPoolExecutor(8) as pool:  # concurrent connections: the kernel hands them to both workers
        statuses = list(pool.map(lambda _: http("GET", url)[0], range(n)))
    assert statuses == [200] * n
    for _ in range(3):  # whichever worker answers the scrape
        body = scrape(two_workers)
        route = {"route": "/charts/{chart}/state", "method": "GET"}
        assert total(body, "stateservice_requests_total", status="200", **route) == n
        assert total(body, "stateservice_request_duration_seconds_count", **route) == n
        assert not any("green_state" in str(labels) for labels, _ in samples(body, "stateservice_requests_total"))


def test_a_put_that_moves_the_chart_counts_one_transition(two_workers: ServiceProcess) -> None:
    assert http("PUT", f"{two_workers.url}/charts/states/state?state=green_state&host=h1")[0] == 200
    counted = {"route": "/charts/{chart}/state", "method": "PUT", "status": "200"}
    # request counts are added on the answering worker's next loop turn (docs/operating.md): a scrape
    # answered by the other worker in between may not see it yet, so wait for it, a moment at most
    deadline = time.monotonic() + 5
    while total(body := scrape(two_workers), "stateservice_requests_total", **counted) == 0:
        assert time.monotonic() < deadline, "the PUT was never counted"
        time.sleep(0.05)
    assert total(body, "stateservice_transitions_total", chart="states", cause="put") == 1
    assert total(body, "stateservice_requests_total", **counted) == 1


def test_the_leader_gauge_sums_to_one_across_workers(two_workers: ServiceProcess) -> None:
    deadline = time.monotonic() + 15
    while total(scrape(two_workers), "stateservice_leader") != 1:
        assert time.monotonic() < deadline, "no worker reported leading"
        time.sleep(0.2)
    for _ in range(5):  # never two leaders, whichever worker answers
        assert total(scrape(two_workers), "stateservice_leader") == 1
        time.sleep(0.1)


def test_a_killed_leading_worker_leaves_no_stale_leader(services: Services, redis_url: str) -> None:
    service = services.start(CHART, redis_url=redis_url, workers=2, args=["--lease-ttl", "1"])
    deadline = time.monotonic() + 15
    while total(scrape(service), "stateservice_leader") != 1:
        assert time.monotonic() < deadline, "no worker reported leading"
        time.sleep(0.1)
    leader = json.loads(http("GET", f"{service.url}/leader")[2])
    os.kill(leader["pid"], signal.SIGKILL)  # no chance to set its gauge to 0: the parent must drop it
    service.wait_for("worker_spawned", count=3)
    deadline = time.monotonic() + 15
    while json.loads(http("GET", f"{service.url}/leader")[2]).get("pid") in (None, leader["pid"]):
        assert time.monotonic() < deadline, "no new leader"
        time.sleep(0.1)
    time.sleep(1)  # the new leader has set its gauge
    for _ in range(5):
        assert total(scrape(service), "stateservice_leader") == 1
        time.sleep(0.1)
    assert service.stop() == 0


SECRET = "sst_metrics-test-secret"


async def test_route_labels_are_canonical_and_unknown_paths_unmatched(aiohttp_client: Any, redis_url: str) -> None:
    chart = parse(CHART.read_text(), str(CHART)).unwrap()
    reader = Token("reader", hash_secret(SECRET), frozenset({Scope.READ}))
    app = create_app(Config(redis_url=redis_url), Loaded([chart], Tokens((reader,))), scheduler=False)
    client = await aiohttp_client(app)
    auth = {"Authorization": f"Bearer {SECRET}"}

    async def metrics_text() -> str:
        response = await client.get("/metrics", headers=auth)
        assert response.status == 200
        return await response.text()

    before = await metrics_text()
    assert (await client.get("/metrics")).status == 401  # the read scope is needed, and the 401 is counted
    assert (await client.get("/no/such/path-xyzzy", headers=auth)).status == 404
    assert (await client.get("/charts/nochart-xyzzy/state?state=a", headers=auth)).status == 404
    after = await metrics_text()

    def delta(**labels: str) -> float:
        return total(after, "stateservice_requests_total", **labels) - total(
            before, "stateservice_requests_total", **labels
        )

    assert delta(route="unmatched", method="GET", status="404") == 1
    assert delta(route="/charts/{chart}/state", method="GET", status="404") == 1
    assert delta(route="/metrics", method="GET", status="401") == 1
    assert "xyzzy" not in after


def test_a_killed_services_metrics_dir_is_removed_by_the_next_start(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    killed = services.start(CHART, redis_url=redis_url, workers=2)  # its TMPDIR is tmp_path, as the services'
    [left] = [p for p in tmp_path.iterdir() if p.name.startswith(metrics.PREFIX)]
    assert left.name.startswith(f"{metrics.PREFIX}{killed.pid}-")
    killed.kill()  # SIGKILL: no chance to remove it
    assert left.exists()

    again = services.start(CHART, redis_url=redis_url)

    assert not left.exists()
    [current] = [p for p in tmp_path.iterdir() if p.name.startswith(metrics.PREFIX)]
    assert current.name.startswith(f"{metrics.PREFIX}{again.pid}-")
    assert again.stop() == 0
    assert not current.exists()


def test_remove_stale_keeps_live_and_foreign_dirs(tmp_path: Path) -> None:
    dead = _dead_pid()
    stale = tmp_path / f"{metrics.PREFIX}{dead}-abc"
    live = tmp_path / f"{metrics.PREFIX}{os.getpid()}-def"
    other = tmp_path / "stateservice-metrics-notapid-x"
    unrelated = tmp_path / "something-else"
    for directory in (stale, live, other, unrelated):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"x")
    link = tmp_path / f"{metrics.PREFIX}{dead}-link"
    link.symlink_to(unrelated)  # a link is never followed nor removed

    assert metrics.remove_stale(str(tmp_path)) == [str(stale)]
    assert not stale.exists()
    assert live.exists() and other.exists() and (unrelated / "counter_1.db").exists() and link.is_symlink()


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


_NO_PID_CHECK = """
import os, sys
from stateservice.telemetry import metrics
metrics.request("/state", "GET", 200, 0.001)  # the children and their files exist from here on
calls = []
real = os.getpid
os.getpid = lambda: calls.append(1) or real()
for _ in range(10):
    metrics.request("/state", "GET", 200, 0.001)
os.getpid = real
child = os.fork()
if child == 0:
    metrics.request("/state", "GET", 200, 0.001)
    os._exit(0)
os.waitpid(child, 0)
print(len(calls), os.getpid(), child)
"""


def test_updates_ask_no_pid_of_the_os_and_a_forked_child_writes_its_own_files(tmp_path: Path) -> None:
    """prometheus-client checks the pid on every update to notice a fork; ours comes from an at-fork hook."""
    env = {**os.environ, metrics.ENV: str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _NO_PID_CHECK], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    calls, parent, child = (int(word) for word in done.stdout.split())
    assert calls == 0
    assert {p.name for p in tmp_path.iterdir()} >= {f"counter_{parent}.db", f"counter_{child}.db"}
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert total(generate_latest(registry).decode(), "stateservice_requests_total", route="/state") == 12


def test_a_scrape_while_a_worker_creates_its_file_counts_the_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A respawning worker's file exists empty for a moment before it is sized: a scrape then was a 500."""
    monkeypatch.setenv(metrics.ENV, str(tmp_path))
    metrics._restart()
    try:
        metrics.request("/started", "GET", 200, 0.001)
        metrics.flush()
        (tmp_path / "counter_999999.db").touch()
        (tmp_path / "histogram_999999.db").touch()
        assert total(metrics.exposition()[0].decode(), "stateservice_requests_total", route="/started") == 1
    finally:
        monkeypatch.delenv(metrics.ENV)
        metrics._restart()


def _requests_counted() -> float:
    return total(metrics.exposition()[0].decode(), "stateservice_requests_total", route="/turn")


def _durations_counted() -> float:
    return total(metrics.exposition()[0].decode(), "stateservice_request_duration_seconds_count", route="/turn")


@pytest.fixture
def fresh_metrics(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's metrics in memory, from zero."""
    monkeypatch.delenv(metrics.ENV, raising=False)
    metrics._restart()
    yield
    metrics._restart()


def test_the_requests_of_a_loop_turn_are_counted_at_the_next(fresh_metrics: None) -> None:
    async def main() -> tuple[float, float, float]:
        for status in (200, 200, 406):
            metrics.request("/turn", "GET", status, 0.002)
        held = _requests_counted()
        await asyncio.sleep(0)
        return held, _requests_counted(), _durations_counted()

    assert asyncio.run(main()) == (0, 3, 3)
    text = metrics.exposition()[0].decode()
    assert total(text, "stateservice_requests_total", route="/turn", status="406") == 1
    assert total(text, "stateservice_request_duration_seconds_sum", route="/turn") == pytest.approx(0.006)


def test_outside_a_loop_a_request_is_counted_at_once_and_a_loop_that_stops_loses_none(fresh_metrics: None) -> None:
    metrics.request("/turn", "GET", 200, 0.001)
    assert _requests_counted() == 1

    loop = asyncio.new_event_loop()
    loop.call_soon(metrics.request, "/turn", "GET", 200, 0.001)
    loop.call_soon(loop.stop)  # stops at the end of this turn: the count scheduled for the next never runs
    loop.run_forever()
    loop.close()
    assert _requests_counted() == 1
    metrics.flush()  # what eventloop.run does when its loop ends
    assert _requests_counted() == 2

    async def main() -> None:
        metrics.request("/turn", "GET", 200, 0.001)
        await asyncio.sleep(0)

    eventloop.run(main(), "asyncio")  # a new loop gets its own count, though the old one stopped with one pending
    assert _requests_counted() == 3 and _durations_counted() == 3


_FORK_WHILE_HELD = """
import asyncio, os
from stateservice.telemetry import metrics

async def main():
    metrics.request("/turn", "GET", 200, 0.001)  # held for the next turn
    child = os.fork()
    if child == 0:
        metrics.flush()
        os._exit(0)
    os.waitpid(child, 0)

asyncio.run(main())
metrics.flush()
"""


def test_a_forked_child_does_not_count_its_parents_held_requests(tmp_path: Path) -> None:
    env = {**os.environ, metrics.ENV: str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _FORK_WHILE_HELD], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert total(generate_latest(registry).decode(), "stateservice_requests_total", route="/turn") == 1
