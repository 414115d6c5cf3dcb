"""Long-poll gates: `GET /state?state=X&wait=S` answers as soon as X is current, or 406 when S passes.

Through real aiohttp servers on a real Redis: a PUT in the same app, a PUT in a second app on
the same Redis (another worker), an operator's HSET that publishes nothing, and a time state
falling due with no leader all open a waiting gate. The last test runs the command line
(`python -m stateservice serve`) and stops it with SIGTERM while a request waits.
"""

from __future__ import annotations

import asyncio
import functools
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from stateservice.core.chart import Chart, Snapshot
from stateservice.store import keys
from stateservice.store.charts import ChartStore
from stateservice.store.watch import MoveWatcher
from stateservice.web import longpoll
from stateservice.web.appkeys import WATCHER
from tests.support import charts
from tests.support.app import Client, MakeClient
from tests.support.charts import load
from tests.support.service import Services, http, wait_until

# one report opens the gate to fleet
GATE = charts.wave_text(1, "gate")

SOAK = """
name: soak
current_state: wait
states:
  - name: wait
    func: time
    target: {name: go, when: {key: elapsed, value: %s}}
  - name: go
"""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: str
    at: float  # time.monotonic() when it arrived


@pytest.fixture
def make_client(serve: MakeClient) -> MakeClient:
    """`await make_client(*charts, scheduler=False, max_wait=300)`: a real server and a client, no connection cap.

    The server cancels the handler of a client that hangs up, as the runner's does (`handler_cancellation`).
    """
    return functools.partial(serve, scheduler=False, unlimited=True, handler_cancellation=True)


async def get(client: Client, query: str) -> Answer:
    resp = await client.get(f"/state?{query}")
    body = await resp.text()
    return Answer(resp.status, dict(resp.headers), body, time.monotonic())


async def opened(client: Client) -> float:
    """Open the gate (canary -> fleet) with one PUT; the time the PUT was answered."""
    resp = await client.put("/state?state=canary")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Stateservice-State"] == "fleet"
    return time.monotonic()


def waiters(client: Client) -> int:
    watcher = client.app[WATCHER]
    return watcher.waiters


async def until_waiting(client: Client, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while waiters(client) < count:
        assert time.monotonic() < deadline, f"{waiters(client)} of {count} requests waiting after {timeout}s"
        await asyncio.sleep(0.01)


# -- wake and timeout ----------------------------------------------------------------------------------


async def test_a_waiting_get_answers_as_soon_as_a_put_opens_the_gate(make_client: MakeClient) -> None:
    client = await make_client(load(GATE))
    poll = asyncio.create_task(get(client, "state=fleet&wait=5"))
    await until_waiting(client, 1)
    await asyncio.sleep(0.3)
    assert not poll.done()

    put_at = await opened(client)
    answer = await poll

    assert answer.status == 200 and answer.body == "fleet\n"
    assert answer.at - put_at < 0.5
    assert waiters(client) == 0


async def test_a_waiting_get_on_the_current_state_answers_at_once(make_client: MakeClient) -> None:
    client = await make_client(load(GATE))
    started = time.monotonic()
    answer = await get(client, "state=canary&wait=5")
    assert answer.status == 200 and answer.body == "canary\n"
    assert answer.at - started < 0.5


async def test_a_wait_that_ends_first_answers_406_with_retry_after(make_client: MakeClient) -> None:
    client = await make_client(load(GATE))
    started = time.monotonic()

    answer = await get(client, "state=fleet&wait=1")

    assert answer.status == 406, answer.body
    assert 0.9 <= answer.at - started < 2.0
    assert '"not_current"' in answer.body and '"current_state": "canary"' in answer.body
    assert answer.headers["Retry-After"] == "5"
    assert waiters(client) == 0


async def test_a_wait_that_ends_behind_a_time_state_says_when_it_falls_due(make_client: MakeClient) -> None:
    client = await make_client(load(SOAK % "30s"))
    answer = await get(client, "state=go&wait=1")
    assert answer.status == 406, answer.body
    assert 27 <= int(answer.headers["Retry-After"]) <= 29


async def test_a_waiting_get_for_no_state_of_the_chart_is_404_at_once(make_client: MakeClient) -> None:
    client = await make_client(load(GATE))
    started = time.monotonic()
    answer = await get(client, "state=nowhere&wait=5")
    assert answer.status == 404, answer.body
    assert answer.at - started < 0.5


# -- wait= is validated ------------------------------------------------------------------------------


@pytest.mark.parametrize("wait", ["-1", "abc", "nan", "NaN", "inf", "-inf", "1e400", "11", "10.5", "0x5"])
@pytest.mark.parametrize("state", ["canary", "fleet"])
async def test_a_bad_wait_is_400(make_client: MakeClient, wait: str, state: str) -> None:
    client = await make_client(load(GATE), max_wait=10)
    resp = await client.get("/state", params={"state": state, "wait": wait})
    body = await resp.json()
    assert resp.status == 400, body
    assert body["error"] == "bad_request" and body["parameter"] == "wait"
    assert "10" in body["message"]  # says the limit


async def test_the_largest_wait_allowed_is_max_wait(make_client: MakeClient) -> None:
    client = await make_client(load(GATE), max_wait=10)
    answer = await get(client, "state=canary&wait=10")
    assert answer.status == 200


@pytest.mark.parametrize("wait", ["0", "0.0", ""])
async def test_wait_0_is_a_plain_get(make_client: MakeClient, wait: str) -> None:
    client = await make_client(load(GATE))
    assert (await get(client, f"state=canary&wait={wait}")).status == 200
    started = time.monotonic()
    answer = await get(client, f"state=fleet&wait={wait}")
    assert answer.status == 406
    assert answer.at - started < 0.5
    assert answer.headers["Retry-After"] == "5"


# -- Retry-After on a plain 406 ------------------------------------------------------------------------


async def test_a_plain_406_behind_an_increment_state_says_retry_after_5(make_client: MakeClient) -> None:
    client = await make_client(load(GATE))
    answer = await get(client, "state=fleet")
    assert answer.status == 406
    assert answer.headers["Retry-After"] == "5"


async def test_a_plain_406_behind_a_time_state_says_when_it_falls_due(make_client: MakeClient) -> None:
    client = await make_client(load(SOAK % "30s"))
    answer = await get(client, "state=go")
    assert answer.status == 406, answer.body
    assert 28 <= int(answer.headers["Retry-After"]) <= 30


async def test_a_plain_406_after_a_move_says_retry_after_5(make_client: MakeClient) -> None:
    client = await make_client(load(GATE))
    await opened(client)
    answer = await get(client, "state=canary")
    assert answer.status == 406
    assert answer.headers["Retry-After"] == "5"


# -- a client that hangs up ----------------------------------------------------------------------------


async def test_a_client_that_hangs_up_leaves_no_waiter(make_client: MakeClient) -> None:
    client = await make_client(load(GATE))
    hanging = asyncio.create_task(client.get("/state?state=fleet&wait=30"))
    await until_waiting(client, 1)
    await asyncio.sleep(0.3)

    hanging.cancel()
    hung_up = time.monotonic()
    while waiters(client) and time.monotonic() - hung_up < 2.5:
        await asyncio.sleep(0.02)

    assert waiters(client) == 0, "the waiter of a request whose client went away is still there"
    assert time.monotonic() - hung_up <= 0.5  # the handler is cancelled: nothing waits for a re-check
    # and the service still answers waiters
    poll = asyncio.create_task(get(client, "state=fleet&wait=5"))
    await until_waiting(client, 1)
    await opened(client)
    assert (await poll).status == 200


async def test_without_handler_cancellation_the_next_recheck_drops_a_hung_up_waiter(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application served by a runner that does not cancel handlers still loses the waiter, at the re-check."""
    monkeypatch.setattr(longpoll, "RECHECK", 0.3)
    client = await make_client(load(GATE), handler_cancellation=False)
    hanging = asyncio.create_task(client.get("/state?state=fleet&wait=30"))
    await until_waiting(client, 1)

    hanging.cancel()
    hung_up = time.monotonic()
    while waiters(client) and time.monotonic() - hung_up < 3.0:
        await asyncio.sleep(0.02)

    assert waiters(client) == 0, "the waiter of a request whose client went away is still there"
    assert time.monotonic() - hung_up <= 1.5


async def test_a_parked_waiter_sleeps_until_the_recheck(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No timer wakes a waiter in between (5,000 parked requests would keep a worker busy): one wait per re-check."""
    waits: list[float] = []
    wait = MoveWatcher.wait

    async def counted(self: MoveWatcher, chart: str, timeout: float) -> Snapshot | None:
        waits.append(timeout)
        return await wait(self, chart, timeout)

    monkeypatch.setattr(MoveWatcher, "wait", counted)
    client = await make_client(load(GATE))
    poll = asyncio.create_task(get(client, "state=fleet&wait=10"))
    await until_waiting(client, 1)
    await asyncio.sleep(1.5)

    assert len(waits) == 1 and waits[0] == pytest.approx(longpoll.RECHECK, abs=0.5), waits
    await opened(client)
    assert (await poll).status == 200


# -- what wakes a waiter -------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_move_that_publishes_nothing_is_still_seen(make_client: MakeClient, plain: Redis) -> None:
    """An operator's HSET publishes no message: the waiter's own re-check (every 5 s) finds it."""
    client = await make_client(load(GATE))
    poll = asyncio.create_task(get(client, "state=fleet&wait=10"))
    await until_waiting(client, 1)

    await plain.hset(keys.chart_state("gate"), mapping={keys.CURRENT_STATE: "fleet", keys.counter_field("fleet"): 0})
    moved = time.monotonic()
    answer = await poll

    assert answer.status == 200, answer.body
    assert answer.at - moved <= 6.0


async def test_a_move_in_another_worker_wakes_the_waiters_of_this_one(make_client: MakeClient) -> None:
    chart = load(GATE)
    first, second = await make_client(chart), await make_client(chart)
    polls = [asyncio.create_task(get(first, "state=fleet&wait=5")) for _ in range(3)]
    await until_waiting(first, 3)

    put_at = await opened(second)
    answers = await asyncio.gather(*polls)

    assert [a.status for a in answers] == [200] * 3
    assert max(a.at for a in answers) - put_at < 0.5  # the subscription, not the 5 s re-check
    assert waiters(first) == 0


async def test_a_time_state_falling_due_wakes_a_waiter_with_no_leader(make_client: MakeClient, plain: Redis) -> None:
    client = await make_client(load(SOAK % "1s"), scheduler=False)
    view = await client.get("/charts/soak")
    assert (await view.json())["current_state"] == "wait"
    started = time.monotonic()

    answer = await get(client, "state=go&wait=5")

    assert answer.status == 200, answer.body
    assert answer.at - started < 1.5  # at the due time, not at the 5 s re-check
    assert await plain.hget(keys.chart_state("soak"), keys.CURRENT_STATE) == "go"
    records: list[tuple[str, dict[str, str]]] = await plain.xrange(keys.chart_history("soak"))  # type: ignore[assignment]
    assert [(f["from"], f["to"], f["cause"]) for _, f in records] == [("wait", "go", "time")]


async def test_the_waiters_woken_by_a_move_share_one_read_of_the_chart(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the move's message the watcher reads the chart once and hands the state to every waiter."""
    client = await make_client(load(GATE))
    polls = [asyncio.create_task(get(client, "state=fleet&wait=10")) for _ in range(20)]
    await until_waiting(client, 20)
    reads: list[str] = []
    current_state = ChartStore.current_state

    async def counted(self: ChartStore, chart: Chart) -> Snapshot:
        reads.append(chart.name)
        return await current_state(self, chart)

    monkeypatch.setattr(ChartStore, "current_state", counted)
    await opened(client)
    answers = await asyncio.gather(*polls)

    assert [a.status for a in answers] == [200] * 20
    assert reads == ["gate"]  # not one per waiter


@pytest.mark.slow
async def test_many_waiters_all_answer_soon_after_the_gate_opens(make_client: MakeClient) -> None:
    client = await make_client(load(GATE))
    count = 500
    polls = [asyncio.create_task(get(client, "state=fleet&wait=20")) for _ in range(count)]
    await until_waiting(client, count, timeout=15)

    put_at = await opened(client)
    answers = await asyncio.gather(*polls)

    assert [a.status for a in answers] == [200] * count
    assert max(a.at for a in answers) - put_at < 1.0
    assert waiters(client) == 0


# -- a stopping service --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_waiting_get_answers_503_when_the_service_stops(services: Services, redis_url: str, tmp_path: Path) -> None:
    chart = tmp_path / "gate.yaml"
    chart.write_text(textwrap.dedent(GATE).lstrip("\n"))
    service = services.start(chart, redis_url=redis_url)
    result: list[tuple[tuple[int, dict[str, str], str], float]] = []

    def poll() -> None:
        answer = http("GET", f"{service.url}/state?state=fleet&wait=60", timeout=30)
        result.append((answer, time.monotonic()))

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(1.0)  # the request is in and waiting
    assert not result, result

    stopping = time.monotonic()
    assert service.stop() == 0
    thread.join(5)

    assert result, "the waiting request got no answer"
    (status, headers, body), at = result[0]
    assert status == 503, body
    assert '"error": "stopping"' in body
    assert headers.get("Retry-After") == "1", headers
    assert at - stopping < 3.0
    assert wait_until(lambda: not service.running, 1)
