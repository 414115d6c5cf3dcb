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
import runpy
import signal
import time
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
from tests.support.models import Announces, Crashes, Fixed, Layout, Rejects, WhereAmI, colors_tree, save
from tests.support.paths import EXAMPLES
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


async def announced(directory: Path, known: set[int], timeout: float = 30) -> int:
    """The pid of a prediction process, not one of `known`, that has started predicting with an Announces model
    (polled without blocking the loop, which also serves the test's requests)."""
    deadline = time.monotonic() + timeout
    while True:
        new = {int(path.name) for path in directory.iterdir()} - known
        if new:
            return new.pop()
        assert time.monotonic() < deadline, f"no new prediction process started predicting within {timeout}s"
        await asyncio.sleep(0.02)


async def test_a_pool_process_killed_while_predicting_is_retried_once_on_a_new_one(
    pooled: Any, layout: Layout, tmp_path: Path
) -> None:
    (predicting := tmp_path / "predicting").mkdir()
    layout.add("slow", Announces(predicting, 1.0))
    client, cache = await pooled(layout)

    with structlog.testing.capture_logs() as logs:
        slow = asyncio.ensure_future(post(client, {"name": "slow", "values": [[1], [2]]}))
        pid = await announced(predicting, set())
        os.kill(pid, signal.SIGKILL)
        status, body = await asyncio.wait_for(slow, 30)  # never a hang

    assert (status, body) == (200, {"state": ["green", "green"]})
    [new] = pool_pids(cache)
    assert {int(path.name) for path in predicting.iterdir()} == {pid, new}  # predicted again, in the new process
    [died] = [e for e in logs if e["event"] == "predict_process_died"]
    assert (died["pid"], died["why"], died["jobs"]) == (pid, "killed by signal SIGKILL", 1)
    [retried] = [e for e in logs if e["event"] == "prediction_retried"]
    assert (retried["model"], retried["why"]) == ("slow", "killed by signal SIGKILL")


async def test_a_request_whose_process_dies_twice_answers_500_naming_the_signal(
    pooled: Any, layout: Layout, tmp_path: Path
) -> None:
    (predicting := tmp_path / "predicting").mkdir()
    layout.add("slow", Announces(predicting, 5.0))
    client, cache = await pooled(layout)

    slow = asyncio.ensure_future(post(client, {"name": "slow", "values": [[1]]}))
    first = await announced(predicting, set())
    os.kill(first, signal.SIGKILL)
    second = await announced(predicting, {first})
    os.kill(second, signal.SIGKILL)
    status, body = await asyncio.wait_for(slow, 30)

    assert (status, body["error"], body["model"]) == (500, "prediction_failed", "slow")
    assert body["message"] == (
        "the prediction process died while predicting with model 'slow' (killed by signal SIGKILL), "
        "and so did the new one it was retried on (killed by signal SIGKILL)"
    )
    assert await post(client, GREEN) == (200, {"state": ["green"]})  # a third process
    assert not {first, second} & set(pool_pids(cache))


@pytest.mark.parametrize(
    ("model", "why"), [(Crashes(), "killed by signal SIGKILL"), (Crashes(exit_code=3), "exit code 3")]
)
async def test_a_model_that_kills_its_process_answers_500_saying_how_and_others_keep_working(
    pooled: Any, layout: Layout, model: Crashes, why: str
) -> None:
    layout.add("crash", model)
    client, _ = await pooled(layout)

    status, body = await post(client, {"name": "crash", "values": [[1]]})

    assert (status, body["error"]) == (500, "prediction_failed")
    assert body["message"] == (
        f"the prediction process died while predicting with model 'crash' ({why}), "
        f"and so did the new one it was retried on ({why})"
    )
    assert await post(client, GREEN) == (200, {"state": ["green"]})


async def test_a_request_cancelled_while_its_rows_are_written_leaves_the_next_jobs_whole(
    layout: Layout, tmp_path: Path
) -> None:
    (predicting := tmp_path / "predicting").mkdir()
    layout.add("busy", Announces(predicting, 1.0))
    cache = ModelCache(layout.specs(), predict_processes=1, warm=False)
    cache.start()
    try:
        assert await cache.predict("colors", [[500, 0]]) == ["green"]
        busy = asyncio.ensure_future(cache.predict("busy", [[1]]))
        [pid] = [await announced(predicting, set())]  # predicting: it reads no job until it is done
        # megabytes of rows (distinct rows: pickle would share one row repeated), written from a thread a pipe's
        # worth at a time; the request is cancelled (a client hung up) halfway
        big = asyncio.ensure_future(cache.predict("colors", [[500.0, float(i)] for i in range(200_000)]))
        await asyncio.sleep(0.3)
        big.cancel()

        assert await asyncio.wait_for(cache.predict("colors", [[500, 0]]), 20) == ["green"]
        assert await busy == ["green"]
        assert pool_pids(cache) == [pid]
    finally:
        await cache.close()


# -- as large as the body limit: through `serve` (uvloop), with the example model --------------------

BANDS = [([500, 10], "green"), ([650, 20], "red"), ([470, 90], "blue")]  # each row 9 characters of JSON


@pytest.fixture(scope="module")
def example_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/models/train.py's `colors` model, trained once for this module: a models dir for its conf."""
    trainer = runpy.run_path(str(EXAMPLES / "models" / "train.py"))
    out = tmp_path_factory.mktemp("example-models")
    trainer["save"](trainer["train"](), out)
    return out


def filling(limit: int) -> tuple[bytes, list[str]]:
    """A POST /state body with as many rows as fit in `limit` bytes, and the state of each."""
    head, tail, row = b'{"name": "colors", "values": [', b"]}", len(b"[500, 10], ")
    count = (limit - len(head) - len(tail) + 2) // row  # the last row has no ", "
    rows = [BANDS[i % 3] for i in range(count)]
    body = head + ", ".join(json.dumps(values) for values, _ in rows).encode() + tail
    assert limit - row < len(body) <= limit
    return body, [state for _, state in rows]


@pytest.mark.parametrize(("flags", "limit"), [([], Config().max_body), (["--max-body", "8M"], 8 * 1024 * 1024)])
def test_a_body_that_fills_the_limit_is_predicted(
    services: Services, example_models: Path, redis_url: str, flags: list[str], limit: int
) -> None:
    # answers of more than a pipe's 64 KiB: under uvloop their pipe is non-blocking, and was read as if it blocked
    args = ["--config", str(EXAMPLES / "models" / "conf"), "--models", str(example_models), "--event-loop", "uvloop"]
    service = services.start(redis_url=redis_url, args=args + flags)
    body, states = filling(limit)

    assert _post(service.url, body) == (200, {"state": states})

    assert service.events("predict_process_died") == []


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
