"""Redis outages against a running service: 503 JSON at once, then recovery without a restart.

A stalled Redis (SIGSTOP: connections open, no answers) is met by each request's Redis deadline
(`--redis-deadline`, 1.5 s by default): every route that needs Redis answers 503 within 2 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from tests.support.redisproc import RedisProcess
from tests.support.service import ServiceProcess, Services, http, wait_until

pytestmark = pytest.mark.slow

FAST = 2.0  # seconds an answer may take while Redis is away
RECOVERY = 10.0  # seconds the service may take to notice Redis is back


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    """Chart `gate`: `open` moves to the final `closed` after 100 reports."""
    path = tmp_path / "gate.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            current_state: open
            states:
              - name: open
                func: increment
                current: {key: hosts, value: 0}
                target: {name: closed, when: {key: hosts, value: 100}}
              - name: closed
            """
        )
    )
    return path


def timed(method: str, url: str) -> tuple[int, dict[str, str], str, float]:
    started = time.monotonic()
    status, headers, body = http(method, url, timeout=30)
    return status, headers, body, time.monotonic() - started


def assert_unavailable_fast(service: ServiceProcess, method: str, path: str, limit: float = FAST) -> None:
    status, headers, body, took = timed(method, f"{service.url}{path}")
    assert status == 503, (method, path, status, body)
    assert took < limit, (method, path, took)
    assert json.loads(body)["error"] == "store_unavailable", body
    assert headers.get("Retry-After"), headers
    assert headers.get("Content-Type", "").startswith("application/json")


def recovered(service: ServiceProcess) -> bool:
    return http("GET", f"{service.url}/state?state=open", timeout=5)[0] == 200


def counter(url: str) -> int:
    with redis.Redis.from_url(url, decode_responses=True) as client:
        return int(client.hget("stateservice:{gate}", "counter:open") or -1)


def no_internal_errors(service: ServiceProcess) -> None:
    assert [e for e in service.events("request") if e.get("status") == 500] == []
    assert service.events("unhandled_error") == []


def test_redis_killed_answers_503_at_once_and_recovers_by_itself(
    services: Services, redis_factory: Callable[..., RedisProcess], chart: Path
) -> None:
    server = redis_factory(appendonly=True)
    service = services.start(chart, redis_url=server.url)
    assert http("PUT", f"{service.url}/state?state=open&host=h1")[0] == 200
    assert http("GET", f"{service.url}/readyz")[0] == 200

    server.kill()

    for _ in range(2):  # the first request finds the dead connections, the next must not hang reconnecting
        assert_unavailable_fast(service, "GET", "/state?state=open")
        assert_unavailable_fast(service, "PUT", "/state?state=open&host=h2")
        assert_unavailable_fast(service, "GET", "/charts/gate")
        assert_unavailable_fast(service, "GET", "/readyz")
    assert http("GET", f"{service.url}/healthz")[0] == 200

    server.start()  # same port, same dir

    assert wait_until(lambda: recovered(service), RECOVERY), service.stderr
    assert http("GET", f"{service.url}/readyz")[0] == 200
    assert http("PUT", f"{service.url}/state?state=open&host=h2")[0] == 200
    assert counter(server.url) == 2  # h1 kept through the crash (AOF), h2 counted after it
    assert service.running
    no_internal_errors(service)
    assert service.stop() == 0


# every route that needs Redis, with a query that would answer 200 (or, for `closed`, 406) while Redis answers
REDIS_ROUTES = [
    ("GET", "/state?state=open"),
    ("GET", "/charts/gate/state?state=closed"),  # a 406 needs Redis too: its Retry-After reads the clock
    ("GET", "/state?state=closed&wait=30"),  # a long-poll begun during the stall: its first read
    ("PUT", "/state?state=open&host=h2"),
    ("PUT", "/charts/gate/state?state=open&host=h3"),
    ("GET", "/charts"),
    ("GET", "/charts/gate"),
    ("GET", "/charts/gate/history"),
    ("GET", "/readyz"),
    ("GET", "/leader"),
]


@contextlib.contextmanager
def stalled(server: RedisProcess) -> Iterator[None]:
    """Redis alive, its connections open, answering nothing (a long fork, a stuck disk, a network black hole)."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def test_redis_stalled_answers_503_within_the_deadline_on_every_route_and_recovers(
    services: Services, redis_factory: Callable[..., RedisProcess], chart: Path
) -> None:
    server = redis_factory()
    service = services.start(chart, redis_url=server.url)
    assert http("PUT", f"{service.url}/state?state=open&host=h1")[0] == 200
    pid = service.pid
    with ThreadPoolExecutor(1) as pool:
        # a long-poll waiting when Redis stalls: once its wait ends, its read meets the deadline
        waiting = pool.submit(timed, "GET", f"{service.url}/state?state=closed&wait=1")
        time.sleep(0.3)

        with stalled(server):
            for method, path in REDIS_ROUTES * 2:  # the second round meets connections opened during the stall
                assert_unavailable_fast(service, method, path)
            status, headers, body, took = waiting.result()
            assert (status, json.loads(body)["error"], headers.get("Retry-After")) == (503, "store_unavailable", "1")
            assert took < 1 + FAST, took
            for path in ("/healthz", "/openapi.json"):  # what needs no Redis is served all along
                assert http("GET", f"{service.url}{path}")[0] == 200

    assert wait_until(lambda: recovered(service), RECOVERY), service.stderr
    for method, path in REDIS_ROUTES:
        expected = 406 if "closed" in path else 200
        status, _, body = http(method, f"{service.url}{path}".replace("wait=30", "wait=0.1"))
        assert status == expected, (method, path, status, body)
    # the reports answered 503 during the stall, retried: each host counted once, whatever reached Redis
    answers = [http("PUT", f"{service.url}/state?state=open&host={host}") for host in ("h1", "h2", "h3", "h4", "h2")]
    assert [(status, headers["Stateservice-Counted"]) for status, headers, _ in answers] == [
        (200, "false"),
        (200, "false"),
        (200, "false"),
        (200, "true"),
        (200, "false"),
    ]
    assert counter(server.url) == 4
    status, _, body = http("GET", f"{service.url}/charts/gate")
    assert (status, json.loads(body)["hosts_counted"]) == (200, ["h1", "h2", "h3", "h4"])
    assert service.pid == pid  # recovered without a restart
    assert service.events("redis_deadline_passed")
    no_internal_errors(service)
    assert service.stop() == 0


def test_the_redis_deadline_is_a_setting(
    services: Services, redis_factory: Callable[..., RedisProcess], chart: Path
) -> None:
    server = redis_factory()
    service = services.start(chart, redis_url=server.url, env={"STATESERVICE_REDIS_DEADLINE": "0.3"})
    assert http("GET", f"{service.url}/state?state=open")[0] == 200

    with stalled(server):
        assert_unavailable_fast(service, "GET", "/state?state=open", limit=1.0)
        assert_unavailable_fast(service, "PUT", "/state?state=open&host=h2", limit=1.0)
        status, _, body = http("GET", f"{service.url}/readyz")
        assert (status, json.loads(body)["deadline"]) == (503, 0.3)

    assert wait_until(lambda: recovered(service), RECOVERY), service.stderr
    no_internal_errors(service)
    assert service.stop() == 0


def test_a_service_started_while_redis_is_down_serves_once_it_is_up(
    services: Services, redis_factory: Callable[..., RedisProcess], chart: Path
) -> None:
    server = redis_factory()
    url = server.url
    server.kill()

    service = services.start(chart, redis_url=url)

    assert_unavailable_fast(service, "GET", "/readyz")
    assert_unavailable_fast(service, "GET", "/state?state=open")
    assert_unavailable_fast(service, "PUT", "/state?state=open&host=h1")
    assert http("GET", f"{service.url}/healthz")[0] == 200

    server.start()

    assert wait_until(lambda: recovered(service), RECOVERY), service.stderr
    assert http("GET", f"{service.url}/readyz")[0] == 200
    assert http("PUT", f"{service.url}/state?state=open&host=h1")[0] == 200
    assert counter(url) == 1
    with redis.Redis.from_url(url, decode_responses=True) as client:
        assert client.smembers("stateservice:charts") == {"gate"}  # registered once Redis came back
        assert client.hget("stateservice:{gate}:definition", "path") == str(chart)
    no_internal_errors(service)
    assert service.stop() == 0


def test_a_put_with_host_retried_after_an_outage_counts_once(
    services: Services, redis_factory: Callable[..., RedisProcess], chart: Path
) -> None:
    server = redis_factory(appendonly=True)
    service = services.start(chart, redis_url=server.url)
    # h1's report counted just before the outage (say its answer was lost); h2's hit the outage
    assert http("PUT", f"{service.url}/state?state=open&host=h1")[0] == 200
    server.kill()
    assert_unavailable_fast(service, "PUT", "/state?state=open&host=h2")
    server.start()
    assert wait_until(lambda: recovered(service), RECOVERY), service.stderr

    answers = [http("PUT", f"{service.url}/state?state=open&host={host}") for host in ("h1", "h2", "h2", "h1")]

    assert [(status, headers["Stateservice-Counted"]) for status, headers, _ in answers] == [
        (200, "false"),
        (200, "true"),
        (200, "false"),
        (200, "false"),
    ]
    assert counter(server.url) == 2
    status, _, body = http("GET", f"{service.url}/charts/gate")
    assert status == 200
    assert json.loads(body)["hosts_counted"] == ["h1", "h2"]
    assert service.stop() == 0


def test_sigterm_during_an_outage_exits_0(
    services: Services, redis_factory: Callable[..., RedisProcess], chart: Path
) -> None:
    server = redis_factory()
    service = services.start(chart, redis_url=server.url)
    assert http("GET", f"{service.url}/state?state=open")[0] == 200
    server.kill()
    assert_unavailable_fast(service, "GET", "/state?state=open")

    assert service.stop() == 0
