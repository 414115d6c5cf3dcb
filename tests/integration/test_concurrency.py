"""Exact counts under load: many concurrent PUTs through several workers and several services on one Redis."""

from __future__ import annotations

import asyncio
import collections
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest
import redis

from tests.support.service import Services

pytestmark = pytest.mark.slow


def load_chart(directory: Path, target: int) -> Path:
    """Chart `load`: `busy` moves to the final `done` after `target` reports."""
    path = directory / "load.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            current_state: busy
            states:
              - name: busy
                func: increment
                current: {{key: hosts, value: 0}}
                target: {{name: done, when: {{key: hosts, value: {target}}}}}
              - name: done
            """
        )
    )
    return path


async def fire(requests: Sequence[tuple[str, str]], limit: int) -> list[tuple[int, dict[str, str], str]]:
    """Send every (method, url) at once over at most `limit` connections: (status, headers, body) each."""
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(method: str, url: str) -> tuple[int, dict[str, str], str]:
            async with session.request(method, url) as response:
                return response.status, dict(response.headers), await response.text()

        return await asyncio.gather(*(one(method, url) for method, url in requests))


def counter(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        return int(client.hget("stateservice:{load}", "counter:busy") or -1)


async def test_concurrent_puts_over_two_workers_count_exactly(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    service = services.start(load_chart(tmp_path, 100_000), redis_url=redis_url, workers=2)
    worker_pids = {e["pid"] for e in service.events("worker_started")}
    assert len(worker_pids) == 2 and service.pid not in worker_pids
    sent = 600

    answers = await fire([("PUT", f"{service.url}/state?state=busy")] * sent, limit=200)

    assert collections.Counter(status for status, _, _ in answers) == {200: sent}
    assert all(headers["Stateservice-Counted"] == "true" for _, headers, _ in answers)
    assert counter(redis_url) == sent
    served_by = {e["pid"] for e in service.events("request") if e.get("method") == "PUT"}
    assert served_by == worker_pids
    assert service.stop() == 0


async def test_two_services_on_one_redis_move_the_chart_exactly_once(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    chart = load_chart(tmp_path, 300)
    first = services.start(chart, redis_url=redis_url)
    second = services.start(chart, redis_url=redis_url)
    urls = [first.url, second.url]
    sent = 600

    answers = await fire(
        [("PUT", f"{urls[i % 2]}/state?state=busy&host=h{i}") for i in range(sent)],
        limit=200,
    )

    statuses = collections.Counter(status for status, _, _ in answers)
    assert statuses == {200: 300, 406: 300}
    assert all(json.loads(body)["current_state"] == "done" for status, _, body in answers if status == 406)
    assert counter(redis_url) == 300
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.hget("stateservice:{load}", "current_state") == "done"
        records = client.xrange("stateservice:{load}:history")
    assert [(r["from"], r["to"], r["cause"]) for _, r in records] == [("busy", "done", "put")]
    for service in (first, second):
        assert {e["pid"] for e in service.events("request") if e.get("method") == "PUT"} == {service.pid}
        assert service.stop() == 0


async def test_a_thousand_concurrent_gets_on_one_worker_never_503(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    service = services.start(load_chart(tmp_path, 100_000), redis_url=redis_url)
    sent = 1200

    answers = await fire([("GET", f"{service.url}/state?state=busy")] * sent, limit=0)  # 0: no limit

    assert collections.Counter(status for status, _, _ in answers) == {200: sent}
    assert service.stop() == 0


async def test_a_thousand_concurrent_puts_on_one_worker_never_503(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    service = services.start(load_chart(tmp_path, 100_000), redis_url=redis_url)
    sent = 1000

    answers = await fire([("PUT", f"{service.url}/state?state=busy&host=h{i}") for i in range(sent)], limit=0)

    assert collections.Counter(status for status, _, _ in answers) == {200: sent}
    assert counter(redis_url) == sent
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.scard("stateservice:{load}:hosts:busy") == sent
    assert service.stop() == 0
