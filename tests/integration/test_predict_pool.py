"""Predictions in a pool of processes (`--predict-processes`): through a real HTTP server, the pool's own cases.

What every model test checks runs with the pool too (tests/integration/test_predict.py runs each twice);
here: predictions and errors made in a pool process, reloads reaching every pool process, a pool
process that dies (killed, or a model that kills it) replaced, and no process left behind when a
worker stops, or when it is killed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from stateservice.config import Config
from stateservice.models.cache import ModelCache
from stateservice.web.app import Loaded, create_app
from tests.support.models import Crashes, Fixed, Layout, Rejects, Sleepy, WhereAmI, colors_tree, save
from tests.support.service import Services, alive, wait_until

Client = TestClient[web.Request, web.Application]
ROWS = [[500, 0], [650, 10], [470, 99.5]]
GREEN = {"name": "colors", "values": [[500, 0]]}


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """`colors`, a stand-in that predicts green for rows of 2 numbers: a pool process that loads only stand-ins
    never imports scikit-learn, which keeps these tests fast (test_predict.py predicts with real models)."""
    made = Layout.make(tmp_path)
    made.add("colors", Fixed([0], n_features_in_=2))
    return made


@pytest.fixture
def pooled(aiohttp_client: Any, redis_url: str) -> Callable[..., Awaitable[tuple[Client, ModelCache]]]:
    """`await pooled(layout, processes)`: a real server whose cache owns a pool of `processes` processes."""

    async def make(layout: Layout, processes: int = 1, **options: Any) -> tuple[Client, ModelCache]:
        options.setdefault("warm", False)
        cache = ModelCache(layout.specs(), predict_processes=processes, **options)
        app = create_app(Config(redis_url=redis_url), Loaded(models=cache), scheduler=False)
        client: Client = await aiohttp_client(app)
        return client, cache

    return make


async def post(client: Client, body: Any) -> tuple[int, Any]:
    resp = await client.post("/state", data=json.dumps(body).encode())
    return resp.status, await resp.json()


def ended(pid: int) -> bool:
    """Whether our child `pid` has exited, all its threads too (a zombie leader's other threads may still hold its
    pipes), without reaping it: the pool must see it die."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def pool_pids(cache: ModelCache) -> list[int]:
    assert cache.pool is not None
    return cache.pool.pids()


async def test_predictions_are_made_in_a_pool_process(pooled: Any, layout: Layout) -> None:
    layout.add("colors", colors_tree())
    layout.add("where", WhereAmI(os.getpid()))
    client, cache = await pooled(layout)

    assert await post(client, {"name": "colors", "values": ROWS}) == (200, {"state": ["green", "red", "blue"]})
    assert await post(client, {"name": "where", "values": [[1], [2]]}) == (200, {"state": ["green", "green"]})
    [pid] = pool_pids(cache)
    assert pid != os.getpid()
    listed = {m["name"]: m for m in (await (await client.get("/models")).json())["models"]}
    path = layout.models / "team" / "colors.joblib"
    assert (listed["colors"]["digest"], listed["colors"]["n_features"]) == (
        hashlib.sha256(path.read_bytes()).hexdigest(),
        2,
    )
    assert all(entry.current is not None and entry.current.estimator is None for entry in cache.entries.values())


async def test_predict_rejecting_values_in_the_pool_process_is_422(pooled: Any, layout: Layout) -> None:
    layout.add("picky", Rejects())
    client, _ = await pooled(layout)

    status, body = await post(client, {"name": "picky", "values": [[1]]})
    assert (status, body["error"], body["model"]) == (422, "values_rejected", "picky")
    assert body["message"] == (
        "model 'picky' rejected the values: Input X contains values this model was not trained for"
    )
    status, body = await post(client, {"name": "colors", "values": [[500, 0, 1]]})
    assert (status, body["error"], body["expected"], body["given"]) == (422, "values_rejected", 2, 3)


async def test_a_new_file_reaches_every_pool_process(pooled: Any, layout: Layout) -> None:
    path = layout.models / "team" / "colors.joblib"
    client, cache = await pooled(layout, 2)
    # enough at once that both processes predict with the first version
    answers = await asyncio.gather(*(post(client, GREEN) for _ in range(20)))
    assert answers == [(200, {"state": ["green"]})] * 20
    before = (await (await client.get("/models")).json())["models"][0]["digest"]

    with structlog.testing.capture_logs() as logs:
        save(Fixed([1]), path)
        answers = await asyncio.gather(*(post(client, GREEN) for _ in range(20)))

    assert answers == [(200, {"state": ["red"]})] * 20
    assert len(pool_pids(cache)) == 2
    [loaded] = [e for e in logs if e["event"] == "model_loaded"]  # the worker loaded the new version once
    assert loaded["replaced"] == before
    assert loaded["digest"] == hashlib.sha256(path.read_bytes()).hexdigest() != before


async def test_concurrent_first_requests_load_once(pooled: Any, layout: Layout) -> None:
    client, _ = await pooled(layout, 2)

    with structlog.testing.capture_logs() as logs:
        answers = await asyncio.gather(*(post(client, GREEN) for _ in range(10)))

    assert answers == [(200, {"state": ["green"]})] * 10
    assert len([e for e in logs if e["event"] == "model_loaded"]) == 1


async def test_a_corrupt_new_file_keeps_the_old_model_serving_from_a_new_pool_process(
    pooled: Any, layout: Layout
) -> None:
    path = layout.models / "team" / "colors.joblib"
    client, cache = await pooled(layout)
    assert await post(client, GREEN) == (200, {"state": ["green"]})
    path.write_bytes(b"half a model")
    assert await post(client, GREEN) == (200, {"state": ["green"]})
    [pid] = pool_pids(cache)

    os.kill(pid, signal.SIGKILL)  # the new process can no longer read the old version from the file
    assert wait_until(lambda: ended(pid), 10)

    assert await post(client, GREEN) == (200, {"state": ["green"]})
    assert pool_pids(cache) != [pid]


async def test_a_pool_process_killed_while_idle_is_replaced_and_the_next_request_works(
    pooled: Any, layout: Layout
) -> None:
    client, cache = await pooled(layout)
    assert await post(client, GREEN) == (200, {"state": ["green"]})
    [pid] = pool_pids(cache)

    with structlog.testing.capture_logs() as logs:
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: ended(pid), 10)
        assert await post(client, GREEN) == (200, {"state": ["green"]})

    [new] = pool_pids(cache)
    assert new != pid
    assert [e["event"] for e in logs if e["event"] == "predict_process_died"] in ([], ["predict_process_died"])


async def test_a_pool_process_killed_while_predicting_answers_500_and_is_replaced(pooled: Any, layout: Layout) -> None:
    layout.add("slow", Sleepy(5))
    client, cache = await pooled(layout)
    assert await post(client, GREEN) == (200, {"state": ["green"]})  # the process is running
    [pid] = pool_pids(cache)

    with structlog.testing.capture_logs() as logs:
        slow = asyncio.ensure_future(post(client, {"name": "slow", "values": [[1]]}))
        await asyncio.sleep(0.5)  # predicting: the model loaded (once, in the worker's first request) and sleeps
        os.kill(pid, signal.SIGKILL)
        status, body = await asyncio.wait_for(slow, 10)  # never a hang

    assert (status, body["error"], body["model"]) == (500, "prediction_failed", "slow")
    assert body["message"].startswith("the prediction process died while predicting with model 'slow'")
    assert body["message"].endswith("a new one was started: retry the request")
    assert [e["event"] for e in logs if e["event"] == "predict_process_died"] == ["predict_process_died"]
    assert await post(client, GREEN) == (200, {"state": ["green"]})
    assert pid not in pool_pids(cache)


async def test_a_model_that_kills_its_process_answers_500_and_others_keep_working(pooled: Any, layout: Layout) -> None:
    layout.add("crash", Crashes())
    client, _ = await pooled(layout)

    status, body = await post(client, {"name": "crash", "values": [[1]]})

    assert (status, body["error"]) == (500, "prediction_failed")
    assert "the prediction process died" in body["message"]
    assert await post(client, GREEN) == (200, {"state": ["green"]})


# -- the service: no process left behind ----------------------------------------------------------


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def pool_processes(pid: int) -> set[int]:
    """The prediction pool processes under `pid` (spawned: `python -c 'from multiprocessing.spawn ...'`)."""
    found = set()
    for child in children(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.spawn" in argv:
            found.add(child)
    return found


def test_stopping_the_service_leaves_no_pool_process(services: Services, layout: Layout, redis_url: str) -> None:
    args = ["--config", str(layout.conf), "--models", str(layout.models), "--predict-processes", "2"]
    service = services.start(redis_url=redis_url, args=args)
    request = json.dumps(GREEN).encode()
    for _ in range(4):
        assert _post(service.url, request) == (200, {"state": ["green"]})
    assert wait_until(lambda: len(pool_processes(service.pid)) >= 1, 10)
    pool, before = pool_processes(service.pid), children(service.pid)

    assert service.stop() == 0

    assert [pid for pid in pool if alive(pid)] == []  # stopped and joined by the worker before it exited
    # and what else it started (multiprocessing's resource tracker) exits as the worker's pipe closes
    assert wait_until(lambda: not any(alive(pid) for pid in before), 10), [p for p in before if alive(p)]


def test_the_pool_of_a_killed_worker_exits_by_itself(services: Services, layout: Layout, redis_url: str) -> None:
    args = ["--config", str(layout.conf), "--models", str(layout.models), "--workers", "2"]
    service = services.start(redis_url=redis_url, workers=2, args=args)
    workers = children(service.pid)
    assert wait_until(lambda: all(pool_processes(w) for w in workers), 20)  # warmed at start: default 1 process
    victim = next(iter(workers))
    orphans = pool_processes(victim)

    os.kill(victim, signal.SIGKILL)

    assert wait_until(lambda: not any(alive(pid) for pid in orphans), 10)
    assert service.stop() == 0


def _post(url: str, body: bytes) -> tuple[int, Any]:
    import urllib.request

    request = urllib.request.Request(f"{url}/state", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())
