"""What the leader does for approval states, against a real redis-server: timeouts across a SIGKILL of the
leader, the notify webhook (retries, one delivery per suspension), the owner string's repair, and a time
state leading into an approval.

Where a test must show that the leader made a move, it watches the chart in Redis directly (never through
a GET, which would apply due moves and make continuations itself).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from redis.asyncio import Redis

from stateservice.scheduler.notify import Notifier
from stateservice.store import codec, keys
from stateservice.store.approvals import Approvals
from stateservice.store.charts import ChartStore
from stateservice.telemetry import metrics
from tests.integration.test_leader_failover import (
    leading_service,
    records,
    start_all,
    ts,
    wait_for_leader,
    wait_for_state,
)
from tests.integration.test_metrics import total
from tests.support import charts
from tests.support.app import Client, MakeClient
from tests.support.service import ServiceProcess, Services, http, wait_until

pytestmark = pytest.mark.slow

PUBLIC = "https://ss.example"


def approval(name: str, *, after: str | None = None, notify: str | None = None, again: str = "fleet") -> str:
    """An approval state: {approved: true} goes to `again`, {approved: false} to rolled_back; a timeout (else a
    default), a notify URL."""
    text = (
        f"  - name: {name}\n"
        "    func: approval\n"
        "    choices:\n"
        f"      - {{when: {{approved: true}}, next: {again}}}\n"
        "      - {when: {approved: false}, next: rolled_back}\n"
    )
    if after is not None:
        text += f"    timeout: {{after: {after}, next: rolled_back}}\n"
    else:  # a resume no choice matches must lead somewhere
        text += "    default: rolled_back\n"
    if notify is not None:
        text += f"    notify: {notify}\n"
    return text


def gate(*, after: str | None = None, notify: str | None = None, again: str = "fleet") -> str:
    """canary (one report) -> review (an approval) -> fleet, or rolled_back; `again="canary"` makes it a loop."""
    return charts.chart(
        "gate",
        "canary",
        charts.increment("canary", "review", 1),
        approval("review", after=after, notify=notify, again=again),
        charts.final("fleet"),
        charts.final("rolled_back"),
    )


# a soak that leads into the approval by the clock alone
SOAKED = charts.chart(
    "gate",
    "soak",
    charts.timed("soak", "review", "elapsed", "1s"),
    approval("review", after="1h"),
    charts.final("fleet"),
    charts.final("rolled_back"),
)


def chart_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gate.yaml"
    path.write_text(text)
    return path


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST a JSON object with urllib: (status, the JSON answer); error statuses are returned, not raised."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def report_canary(service: ServiceProcess, host: str = "web1") -> None:
    status, _, body = http("PUT", f"{service.url}/charts/gate/state?state=canary&host={host}")
    assert status == 200, body


def continuation(plain_sync: redis.Redis) -> str | None:
    """The continuation the chart's current visit has in Redis (none before someone made it)."""
    found: str | None = plain_sync.hget(keys.chart_state("gate"), keys.CONTINUATION)
    return found


def wait_for_continuation(plain_sync: redis.Redis, timeout: float, other_than: str | None = None) -> str:
    made: list[str | None] = [None]

    def found() -> bool:
        made[0] = continuation(plain_sync)
        return made[0] is not None and made[0] != other_than

    assert wait_until(found, timeout, interval=0.02), f"no continuation within {timeout}s"
    assert made[0] is not None
    return made[0]


# -- the webhook's receiver ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Post:
    at: float  # time.monotonic() when it arrived
    body: dict[str, Any]
    status: int  # what it was answered


class Receiver:
    """A webhook receiver on a free port, in a thread of its own (so that tests that block can use it too).

    It answers the POSTs to /hook with `failing` 500s first, then 200s, and keeps what it was sent.
    """

    def __init__(self, failing: int = 0) -> None:
        self.failing = failing
        self._posts: list[Post] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name="receiver", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def posts(self) -> list[Post]:
        with self._lock:
            return list(self._posts)

    def delivered(self) -> list[Post]:
        return [p for p in self.posts if p.status == 200]

    def start(self) -> Receiver:
        self._thread.start()
        assert self._ready.wait(10), "the receiver did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            status = 500 if len(self._posts) < self.failing else 200
            self._posts.append(Post(time.monotonic(), body, status))
        return web.Response(status=status)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()


@pytest.fixture
def receiver() -> Iterator[Callable[[int], Receiver]]:
    """`receiver(failing)`: a started Receiver (see there); stopped at teardown."""
    made: list[Receiver] = []

    def make(failing: int = 0) -> Receiver:
        made.append(Receiver(failing).start())
        return made[-1]

    yield make
    for each in made:
        each.stop()


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05) -> bool:
    """`wait_until` for an async test: poll `condition` without blocking the served application's loop."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def notifications_counted() -> dict[str, float]:
    """This process's stateservice_approval_notifications_total, by outcome."""
    text = metrics.exposition()[0].decode()
    name = "stateservice_approval_notifications_total"
    return {outcome: total(text, name, outcome=outcome) for outcome in ("failed", "delivered")}


async def history(client: Client) -> list[dict[str, Any]]:
    """The chart's history, oldest first."""
    answer = await client.get("/charts/gate/history")
    assert answer.status == 200
    found: list[dict[str, Any]] = (await answer.json())["history"]
    return found[::-1]


# -- timeouts ------------------------------------------------------------------------------------------


def test_a_timeout_after_the_leader_is_killed_moves_the_chart_once(
    services: Services, redis_url: str, plain_sync: redis.Redis, tmp_path: Path
) -> None:
    fleet = start_all(services, chart_file(tmp_path, gate(after="3s")), redis_url, workers=(1, 1))
    old_id = wait_for_leader(fleet, 5)
    old = leading_service(fleet, old_id)
    [survivor] = [s for s in fleet if s is not old]

    report_canary(survivor)  # enters review; from now on nobody reads the chart
    made = wait_for_continuation(plain_sync, 2)  # the leader made its continuation
    old.wait_for("approval_waiting", where=lambda e: e.get("continuation") == made, deadline=time.monotonic() + 5)
    old.kill()  # SIGKILL, well before the timeout is due

    wait_for_state(plain_sync, "rolled_back", 6, chart="gate")
    put, suspend, timeout = records(plain_sync, "gate")
    assert (put["from"], put["to"], put["cause"]) == ("canary", "review", "put")
    assert (suspend["cause"], suspend["reason"]) == ("suspend", made)
    assert (timeout["from"], timeout["to"], timeout["cause"]) == ("review", "rolled_back", "timeout")
    assert ts(timeout["due_at"]) == ts(put["at"]) + timedelta(seconds=3)
    assert timedelta(0) <= ts(timeout["at"]) - ts(timeout["due_at"]) < timedelta(seconds=1)
    moved = survivor.wait_for("chart_transitioned", where=lambda e: e.get("cause") == "timeout")
    assert moved["pid"] == survivor.pid
    assert wait_for_leader([survivor], 1) == f"{old_id.rpartition(':')[0]}:{survivor.pid}"

    status, body = post_json(f"{survivor.url}/continuations/{made}", {"approved": True})
    assert status == 410 and body["error"] == "continuation_expired", body
    time.sleep(0.6)  # a few more leader ticks: still one timeout, nothing else
    assert [r["cause"] for r in records(plain_sync, "gate")] == ["put", "suspend", "timeout"]
    assert http("GET", f"{survivor.url}/charts/gate")[0] == 200
    assert [r["cause"] for r in records(plain_sync, "gate")] == ["put", "suspend", "timeout"]


# -- the notify webhook --------------------------------------------------------------------------------


async def test_a_notification_is_retried_until_a_2xx_then_never_again(
    serve: MakeClient, receiver: Callable[[int], Receiver]
) -> None:
    hook = receiver(2)  # 500, 500, then 200
    before = notifications_counted()
    client = await serve(charts.load(gate(after="1h", notify=hook.url)), scheduler=True, lease_ttl=1)
    assert (await client.put("/charts/gate/state?state=canary&host=web1")).status == 200

    async def three() -> bool:
        return len(hook.posts) >= 3

    assert await eventually(three, 8), hook.posts
    await asyncio.sleep(1.5)  # several ticks of the leader after the 200: no fourth POST
    first, second, third = hook.posts
    assert [p.status for p in hook.posts] == [500, 500, 200]
    assert second.at - first.at >= 0.95 and third.at - second.at >= 1.95  # backoff 1 s, then 2 s

    chart = await (await client.get("/charts/gate")).json()
    pending = chart["pending_approval"]
    sent = {
        "chart": "gate",
        "state": "review",
        "continuation_url": f"/continuations/{pending['id']}",
        "expires_at": pending["expires_at"],
    }
    assert [p.body for p in hook.posts] == [sent] * 3
    shown = await (await client.get(pending["continuation_url"])).json()
    assert shown["notify_attempts"] == 3 and shown["notified_at"] is not None
    notes = [r for r in await history(client) if r["cause"] == "notify"]
    assert [r["actor"] for r in notes] == ["leader"] * 3
    for attempt, note in enumerate(notes[:2], 1):
        assert note["reason"].startswith(f"notify failed: HTTP 500 (attempt {attempt}); next at ")
    assert notes[2]["reason"] == "notified: HTTP 200 (attempt 3)"
    assert not any("127.0.0.1" in r["reason"] or "/hook" in r["reason"] for r in notes)  # the URL may hold a secret
    after = notifications_counted()
    assert {k: after[k] - before[k] for k in after} == {"failed": 2, "delivered": 1}


async def test_with_a_public_url_the_continuation_url_sent_is_absolute(
    serve: MakeClient, receiver: Callable[[int], Receiver]
) -> None:
    hook = receiver(0)
    client = await serve(charts.load(gate(notify=hook.url)), scheduler=True, lease_ttl=1, public_url=PUBLIC)
    assert (await client.put("/charts/gate/state?state=canary&host=web1")).status == 200

    async def sent() -> bool:
        return bool(hook.posts)

    assert await eventually(sent, 3)
    pending = (await (await client.get("/charts/gate")).json())["pending_approval"]
    [post] = hook.posts
    assert post.body == {
        "chart": "gate",
        "state": "review",
        "continuation_url": f"{PUBLIC}/continuations/{pending['id']}",
        "expires_at": None,  # no timeout: it waits for a person as long as it takes
    }


@pytest.mark.parametrize("failing", [0, 1], ids=["delivered", "failed"])
async def test_a_tick_that_read_before_an_attempt_was_written_down_sends_nothing_early(
    clients: Callable[[], Redis], receiver: Callable[[int], Receiver], failing: int
) -> None:
    hook = receiver(failing)
    chart = charts.load(gate(notify=hook.url))
    store = ChartStore(clients())
    approvals = Approvals(store, {"gate": chart}, timedelta(days=1))
    await store.register(chart)
    await store.report(chart, "canary", "web1")
    _, pending = await approvals.ensure(chart)
    assert pending is not None
    record = keys.chart_continuation("gate", pending.id)
    notifier = Notifier(store)
    try:
        notifier.consider(chart, pending, await store.clock())

        async def written_down() -> bool:
            return await store.redis.hget(record, keys.NOTIFY_ATTEMPTS) == "1"

        assert await eventually(written_down, 3)
        await asyncio.sleep(0.05)  # the attempt's task has ended
        # the leader's next tick read the continuation before that attempt wrote its outcome down, and
        # considers it only now (its reads and the attempt interleave on one loop)
        notifier.consider(chart, pending, await store.clock())
        await asyncio.sleep(0.5)  # a local receiver answers within this; a retry would be due only after 1 s
    finally:
        await notifier.close()
    assert [p.status for p in hook.posts] == [500 if failing else 200]
    assert await store.redis.hget(record, keys.NOTIFY_ATTEMPTS) == "1"
    assert [r["cause"] for r in await store.history(chart, 10)].count("notify") == 1


def test_only_the_leader_notifies_once_per_suspension(
    services: Services,
    redis_url: str,
    plain_sync: redis.Redis,
    tmp_path: Path,
    receiver: Callable[[int], Receiver],
) -> None:
    hook = receiver(0)
    chart = chart_file(tmp_path, gate(notify=hook.url, again="canary"))  # approved: back to canary, another round
    args = ["--lease-ttl", "1", "--public-url", PUBLIC]
    with ThreadPoolExecutor(2) as pool:
        fleet = list(pool.map(lambda _: services.start(chart, redis_url=redis_url, args=args), range(2)))
    chief = leading_service(fleet, wait_for_leader(fleet, 5))
    previous = None
    for round_ in (1, 2):
        report_canary(fleet[round_ % 2])
        previous = notified_once(plain_sync, hook, round_, previous)
        status, body = post_json(f"{fleet[0].url}/continuations/{previous}", {"approved": True})
        assert status == 200 and body["to"] == "canary", body
    delivered = [e for s in fleet for e in s.events("approval_notify")]
    assert [(e["outcome"], e["pid"]) for e in delivered] == [("delivered", chief.pid)] * 2


def notified_once(plain_sync: redis.Redis, hook: Receiver, round_: int, previous: str | None) -> str:
    """Wait for this round's continuation and its one notification (sent with --public-url); its id."""
    made = wait_for_continuation(plain_sync, 2, other_than=previous)
    record = keys.chart_continuation("gate", made)
    assert wait_until(lambda: len(hook.posts) >= round_, 3), hook.posts
    assert wait_until(lambda: plain_sync.hexists(record, keys.NOTIFIED_AT), 2)
    time.sleep(0.6)  # more ticks of the leader, and of the other service seeking the lease
    assert len(hook.posts) == round_, hook.posts
    assert hook.posts[-1].body["continuation_url"] == f"{PUBLIC}/continuations/{made}"
    assert plain_sync.hget(record, keys.NOTIFY_ATTEMPTS) == "1"
    return made


def test_a_new_leader_goes_on_with_the_retries_where_the_killed_one_stopped(
    services: Services,
    redis_url: str,
    plain_sync: redis.Redis,
    tmp_path: Path,
    receiver: Callable[[int], Receiver],
) -> None:
    hook = receiver(2)  # 500, 500, then 200
    fleet = start_all(services, chart_file(tmp_path, gate(after="1h", notify=hook.url)), redis_url, workers=(1, 1))
    old_id = wait_for_leader(fleet, 5)
    old = leading_service(fleet, old_id)
    [survivor] = [s for s in fleet if s is not old]
    report_canary(survivor)
    made = wait_for_continuation(plain_sync, 2)
    record = keys.chart_continuation("gate", made)
    # the first attempt failed and is written down (its retry due 1 s later): the leader dies now
    assert wait_until(lambda: plain_sync.hget(record, keys.NOTIFY_ATTEMPTS) == "1", 3), hook.posts
    old.kill()

    assert wait_until(lambda: plain_sync.hexists(record, keys.NOTIFIED_AT), 8), hook.posts
    assert [p.status for p in hook.posts] == [500, 500, 200]
    first, second, third = hook.posts
    assert second.at - first.at >= 0.95 and third.at - second.at >= 1.95  # the backoff kept in Redis
    assert plain_sync.hget(record, keys.NOTIFY_ATTEMPTS) == "3"
    notes = [r for r in records(plain_sync, "gate") if r["cause"] == "notify"]
    assert [r["reason"].split("(attempt ")[1][0] for r in notes] == ["1", "2", "3"]
    assert [(e["attempt"], e["outcome"]) for e in survivor.events("approval_notify")] == [
        (2, "failed"),
        (3, "delivered"),
    ]


# -- the owner string ----------------------------------------------------------------------------------


async def test_a_lost_owner_string_is_made_again_by_the_leader(serve: MakeClient, plain: Redis) -> None:
    client = await serve(charts.load(gate(after="1h")), scheduler=True, lease_ttl=1)
    assert (await client.put("/charts/gate/state?state=canary&host=web1")).status == 200
    pending = (await (await client.get("/charts/gate")).json())["pending_approval"]
    owner = f"stateservice:continuation:{pending['id']}"
    assert await plain.delete(owner) == 1  # as if the worker that made it stopped before writing it

    async def repaired() -> bool:
        return bool(await plain.exists(owner))

    assert await eventually(repaired, 2)
    assert await plain.get(owner) == "chart gate"
    assert 86400 < await plain.ttl(owner) <= 3600 + 86400  # as long as the record: its expiry and a day's retention
    answer = await client.post(pending["continuation_url"], json={"approved": True})
    assert answer.status == 200, await answer.text()
    assert (await (await client.get("/charts/gate")).json())["current_state"] == "fleet"


# -- a time state leading into an approval -------------------------------------------------------------


def test_a_time_state_that_falls_due_suspends_the_chart_by_the_leader_alone(
    services: Services, redis_url: str, plain_sync: redis.Redis, tmp_path: Path
) -> None:
    service = services.start(chart_file(tmp_path, SOAKED), redis_url=redis_url, args=["--lease-ttl", "1"])
    made = wait_for_continuation(plain_sync, 3)  # nobody asked: the leader moved it on and made the continuation

    status, _, body = http("GET", f"{service.url}/approvals")
    assert status == 200, body
    [waiting] = json.loads(body)["approvals"]
    assert (waiting["id"], waiting["chart"], waiting["state"], waiting["status"]) == (made, "gate", "review", "pending")
    moved, suspend = records(plain_sync, "gate")
    assert (moved["from"], moved["to"], moved["cause"]) == ("soak", "review", "time")
    assert (suspend["cause"], suspend["reason"]) == ("suspend", made)
    assert ts(waiting["expires_at"]) == ts(moved["due_at"]) + timedelta(hours=1)


async def test_a_soak_that_fell_due_while_nothing_ran_is_caught_up_into_the_approval(
    serve: MakeClient, plain: Redis, clients: Callable[[], Redis]
) -> None:
    chart = charts.load(SOAKED)
    await ChartStore(clients()).register(chart)
    began = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)  # the soak began while nothing ran
    await plain.hset(keys.chart_state("gate"), keys.ENTERED_AT, codec.timestamp(began))
    client = await serve(chart, scheduler=True, lease_ttl=1)

    async def suspended() -> bool:
        return bool(await plain.hget(keys.chart_state("gate"), keys.CONTINUATION))

    assert await eventually(suspended, 3)  # nobody asked: the leader caught up and made the continuation
    made = await plain.hget(keys.chart_state("gate"), keys.CONTINUATION)
    causes = [(r["from"], r["to"], r["cause"]) for r in await history(client)]
    assert causes == [("soak", "review", "time"), ("review", "review", "suspend")]
    [waiting] = (await (await client.get("/approvals")).json())["approvals"]
    assert waiting["id"] == made and waiting["status"] == "pending"
    # the review began when the soak fell due, not when the leader caught up
    assert ts(waiting["expires_at"]) == began + timedelta(seconds=1, hours=1)
