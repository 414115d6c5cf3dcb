"""Redis Sentinel: `redis+sentinel://` URLs, and a real service that follows its master through a failover.

The failover test runs a real deployment (master and two replicas with `appendfsync always`,
three sentinels, quorum 2), a real `stateservice serve --redis redis+sentinel://...
--redis-wait-replicas 1`, and clients that keep reporting new hosts while the master is
SIGKILLed. Every report that got a 200 must be counted on the new master.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import pytest
import redis as sync_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from stateservice.charts.files import load_charts
from stateservice.core.chart import Chart
from stateservice.errors import StoreUnavailable
from stateservice.store import keys
from stateservice.store.charts import ChartStore
from stateservice.store.redis.connect import connect, redact
from stateservice.store.redis.replicated import replicated
from stateservice.store.redis.sentinel import SentinelRedis, SentinelURL, parse
from stateservice.store.watch import MoveWatcher
from tests.support.sentinel import SERVICE, SentinelDeployment
from tests.support.service import Services, http, run_cli, wait_until

CHART = """\
name: fleet
current_state: rollout
states:
  - name: rollout
    func: increment
    current: {key: hosts, value: 0}
    target: {name: done, when: {key: hosts, value: 1000000}}
  - name: done
"""


# -- URLs ------------------------------------------------------------------------------------


def test_parse_reads_every_part() -> None:
    url = "redis+sentinel://svc:p%40ss@s1:26380,s2,[::1]:26381/mymaster/3?sentinel_password=sp"
    assert parse(url) == SentinelURL(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        service="mymaster",
        db=3,
        username="svc",
        password="p@ss",
        sentinel_password="sp",
    )
    assert parse("redis+sentinel://h/m") == SentinelURL(sentinels=(("h", 26379),), service="m")
    assert parse("redis+sentinel://:pw@h:1/m/").password == "pw"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:26379", "no service name"),
        ("redis+sentinel://h:26379/", "no service name"),
        ("redis+sentinel://h:26379/m/zero", "'zero' is not a database number"),
        ("redis+sentinel://h:26379/m/0/extra", "is not a database number"),
        ("redis+sentinel://h:port/m", "'h:port' is not a sentinel address"),
        ("redis+sentinel://h:99999/m", "99999 is not a port number"),
        ("redis+sentinel://h1,,h2/m", "'' is not a sentinel address"),
        ("redis+sentinel:///m", "'' is not a sentinel address"),
        ("redis+sentinel://h/m?password=x", "unknown option 'password'"),
        ("rediss+sentinel://h/m", "rediss+sentinel:// (TLS to Sentinel) is not supported"),
    ],
)
def test_parse_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse(url)
    assert says in str(caught.value)


def test_redact_hides_every_password_of_a_sentinel_url() -> None:
    url = "redis+sentinel://svc:secret@s1:26379,s2:26379/m/0?sentinel_username=u&sentinel_password=other"
    assert redact(url) == "redis+sentinel://svc:***@s1:26379,s2:26379/m/0?sentinel_username=u&sentinel_password=***"
    assert redact("redis+sentinel://:secret@[::1]:1/m") == "redis+sentinel://:***@[::1]:1/m"
    assert redact("redis+sentinel://s1,s2/m") == "redis+sentinel://s1,s2/m"
    assert "secret" not in redact("rediss+sentinel://u:secret@h:bad/m")


def test_serve_with_a_bad_sentinel_url_stops_with_a_clear_error(tmp_path: Path) -> None:
    chart = tmp_path / "fleet.yaml"
    chart.write_text(CHART)
    done = run_cli("serve", "--chart", chart, "--redis", "redis+sentinel://u:secret@a:26379,b:x/m", cwd=tmp_path)
    assert done.returncode != 0
    assert "'b:x' is not a sentinel address" in done.stderr
    assert "secret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


# -- a real deployment -----------------------------------------------------------------------


@pytest.mark.slow
async def test_writes_wait_for_replicas_on_the_connection_that_wrote(tmp_path: Path) -> None:
    deployment = SentinelDeployment(tmp_path / "redis", replicas=1, sentinels=0).start()
    replica = deployment.data[1].proc
    assert replica is not None
    redis = connect(f"redis://127.0.0.1:{deployment.data[0].port}/0")
    try:
        chart = _chart(tmp_path)
        store = ChartStore(replicated(redis, 1, 0.3), coalesce=False)
        await store.register(chart)
        assert (await store.report(chart, "rollout", "h1")).counted
        # a stopped replica acknowledges nothing new; WAIT on any other connection (with no write of
        # its own) would count it all the same and acknowledge a write the replica never got
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreUnavailable) as caught:
                await store.report(chart, "rollout", "h2")
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        assert caught.value.fields == {"replicas": 1, "acknowledged": 0}
        assert "only 0 of the 1 replica(s)" in caught.value.message
        # the write is on the master all the same: a retry with the same host= counts nothing twice
        assert not (await store.report(chart, "rollout", "h2")).counted
        assert (await store.report(chart, "rollout", "h3")).counted
        with pytest.raises(StoreUnavailable) as caught:
            await ChartStore(replicated(redis, 2, 0.2), coalesce=False).report(chart, "rollout", "h4")
        assert caught.value.fields == {"replicas": 2, "acknowledged": 1}
        assert await redis.scard(keys.chart_hosts("fleet", "rollout")) == 4
    finally:
        await redis.aclose()
        deployment.stop()


@pytest.mark.slow
def test_a_write_without_enough_replicas_answers_503_json(tmp_path: Path, services: Services) -> None:
    deployment = SentinelDeployment(tmp_path / "redis", replicas=1).start()
    try:
        service = services.start(
            _chart_file(tmp_path),
            redis_url=deployment.url,
            args=["--redis-wait-replicas", "2", "--redis-wait-timeout", "0.2"],
        )
        # the start-up registration did not wait for replicas: the worker registers again, waiting, and cannot
        assert service.wait_for("chart_not_registered")["chart"] == "fleet"
        status, headers, body = http("PUT", f"{service.url}/charts/fleet/state?state=rollout&host=h1")
        assert status == 503
        assert headers["Retry-After"] == "1"
        error = json.loads(body)
        assert error["error"] == "store_unavailable"
        assert error["status"] == 503
        assert (error["replicas"], error["acknowledged"]) == (2, 1)
        assert "retry" in error["message"]
        assert http("GET", f"{service.url}/healthz")[0] == 200
    finally:
        deployment.stop()


@pytest.mark.slow
async def test_writes_leave_an_old_master_that_still_answers_once_the_sentinels_name_another(
    tmp_path: Path,
) -> None:
    deployment = SentinelDeployment(tmp_path / "redis", replicas=1, down_after_ms=800).start()
    redis = connect(deployment.url)
    try:
        watcher = MoveWatcher(redis)  # the long-poll subscription: it must move too
        watcher.start()
        # several pooled connections to the master, idle while it is paused, so nothing closes them
        await asyncio.gather(*(redis.blpop(["warm-up"], timeout=0.1) for _ in range(4)))
        with deployment.master() as client:
            assert await _eventually(lambda: client.execute_command("PUBSUB", "NUMPAT") == 1)
        old = next(node for node in deployment.data if node.port == deployment.master_port())
        assert old.proc is not None
        os.kill(old.proc.pid, signal.SIGSTOP)
        try:
            new_port = deployment.wait_for_failover(old.port)
        finally:
            os.kill(old.proc.pid, signal.SIGCONT)  # back, and answering as a master until the sentinels demote it
        with old.client() as client:
            assert client.info("replication")["role"] == "master"

        await redis.ping()  # the first use after a while asks the sentinels again, in the background
        await asyncio.sleep(0.5)
        await asyncio.gather(*(redis.set(f"after:{n}", n) for n in range(40)))

        with redis_at(new_port) as client:
            assert client.exists(*(f"after:{n}" for n in range(40))) == 40
            assert await _eventually(lambda: client.execute_command("PUBSUB", "NUMPAT") == 1)
        with old.client() as client:
            assert client.keys("after:*") == []  # nothing written where it would be lost
            assert client.execute_command("PUBSUB", "NUMPAT") == 0
        await watcher.close()
    finally:
        await redis.aclose()
        deployment.stop()


@pytest.mark.slow
def test_cli_reset_waits_for_replicas_as_the_service_does(tmp_path: Path) -> None:
    deployment = SentinelDeployment(tmp_path / "redis", replicas=1).start()
    try:
        chart = _chart_file(tmp_path)
        base: list[str | Path] = ["reset", chart, "--yes", "--redis", deployment.url, "--redis-wait-timeout", "0.2"]

        short = run_cli(*base, "--redis-wait-replicas", "2", cwd=tmp_path)
        assert short.returncode == 1, short.stderr
        assert "only 1 of the 2 replica(s)" in short.stderr and "Traceback" not in short.stderr

        env = {"STATESERVICE_REDIS_WAIT_REPLICAS": "1"}  # as a service's environment file would set it
        done = run_cli(*base, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert "chart 'fleet' reset" in done.stdout
        with redis_at(deployment.data[1].port) as replica:  # on the replica before the command said done
            assert replica.hget(keys.chart_state("fleet"), keys.CURRENT_STATE) == "rollout"
    finally:
        deployment.stop()


@pytest.mark.slow
async def test_a_sentinel_address_that_answers_junk_is_passed_over_and_alone_is_unreachable(tmp_path: Path) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while data := await reader.read(65536):  # "+OK" to every command: a server, but no sentinel
            writer.write(b"+OK\r\n" * data.count(b"*"))
            await writer.drain()

    server = await asyncio.start_server(junk, "127.0.0.1", 0)
    junk_port = server.sockets[0].getsockname()[1]
    deployment = SentinelDeployment(tmp_path / "redis", replicas=1).start()
    try:
        alone = connect(f"redis+sentinel://127.0.0.1:{junk_port}/{SERVICE}")
        try:
            with pytest.raises(RedisConnectionError, match="No master found"):  # a 503, not a 500
                await alone.ping()
        finally:
            await alone.aclose()

        real = deployment.url.removeprefix("redis+sentinel://")
        first = connect(f"redis+sentinel://127.0.0.1:{junk_port},{real}")
        try:
            assert await first.set("k", "v")
            assert await first.get("k") == "v"
            # asked twice at once (a new connection, the pool's check): still each sentinel once, none lost
            assert isinstance(first, SentinelRedis) and first.sentinels is not None
            ports = [c.connection_pool.connection_kwargs["port"] for c in first.sentinels.sentinels]
            assert sorted(ports) == sorted([junk_port, *(n.port for n in deployment.sentinels)])
        finally:
            await first.aclose()
    finally:
        deployment.stop()
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await server.wait_closed()


@dataclass
class Answer:
    host: str
    started: float
    ended: float
    status: int | None
    body: str


@pytest.mark.slow
def test_the_service_follows_a_failover_and_loses_no_acknowledged_report(tmp_path: Path, services: Services) -> None:
    deployment = SentinelDeployment(tmp_path / "redis", replicas=2, down_after_ms=800).start()
    try:
        service = services.start(
            _chart_file(tmp_path),
            redis_url=deployment.url,
            # a generous WAIT timeout: a slow disk (appendfsync always) must not turn into 503s
            args=["--redis-wait-replicas", "1", "--redis-wait-timeout", "3", "--lease-ttl", "2"],
        )
        answers: list[Answer] = []
        lock = threading.Lock()
        stop = threading.Event()

        def report(worker: int) -> None:
            for n in range(100_000):
                if stop.is_set():
                    return
                host = f"w{worker}-{n}"
                started = time.monotonic()
                try:
                    status, _, body = http("PUT", f"{service.url}/charts/fleet/state?state=rollout&host={host}", 8)
                except OSError as exc:  # a hang past 8 s or a dropped connection: counted as a failure below
                    status, body = None, repr(exc)
                with lock:
                    answers.append(Answer(host, started, time.monotonic(), status, body))

        def ok_after(moment: float, each: int) -> bool:
            """Whether every client has had `each` 200s to requests sent after `moment`."""
            with lock:
                done = Counter(a.host.partition("-")[0] for a in answers if a.status == 200 and a.started > moment)
            return len(done) == len(threads) and min(done.values()) >= each

        threads = [threading.Thread(target=report, args=(i,), daemon=True) for i in range(6)]
        for thread in threads:
            thread.start()
        try:
            assert wait_until(lambda: ok_after(0, 2), timeout=20), _summary(answers, service.stderr)
            old_port = deployment.master_port()
            killed = time.monotonic()
            deployment.kill_master()
            new_port = deployment.wait_for_failover(old_port)
            failed_over = time.monotonic()
            assert wait_until(lambda: ok_after(failed_over, 4), timeout=20), _summary(answers, service.stderr)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        assert new_port != old_port

        broken = [a for a in answers if a.status not in (200, 503)]
        assert broken == [], broken[:5]  # no other 5xx, no hang, no dropped connection
        unavailable = [a for a in answers if a.status == 503]
        assert unavailable, "the clients never saw the master gone"
        for answer in unavailable:
            assert killed <= answer.ended and answer.started <= failed_over + 5, answer
            assert json.loads(answer.body)["error"] == "store_unavailable"

        acknowledged = {a.host for a in answers if a.status == 200}
        with deployment.master() as master:
            assert master.info("replication")["role"] == "master"
            counted = master.smembers(keys.chart_hosts("fleet", "rollout"))
            assert acknowledged <= counted, sorted(acknowledged - counted)[:10]
            state = master.hgetall(keys.chart_state("fleet"))
            assert int(state[keys.counter_field("rollout")]) == len(counted)  # counter and host set agree
        # the move watcher subscribed again, and the leader renews its lease, on the master the
        # sentinels name (asked again each time: on a loaded box they may fail over more than once)
        assert wait_until(lambda: _on_master(deployment, lambda m: m.pubsub_numpat() >= 1), 10)
        assert wait_until(lambda: _on_master(deployment, _lease_renewed), timeout=10)
        assert service.running
        assert service.events("unhandled_error") == []
    finally:
        deployment.stop()


async def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _on_master(deployment: SentinelDeployment, check: Callable[[sync_redis.Redis], bool]) -> bool:
    try:
        with deployment.master() as master:
            return check(master)
    except (sync_redis.RedisError, RuntimeError):
        return False


def _lease_renewed(master: sync_redis.Redis) -> bool:
    """Whether the lease's TTL went up within 0.7 s: someone renews it (a 2 s lease, renewed every 0.5 s)."""
    before = master.pttl(keys.leader())
    time.sleep(0.7)
    return 0 < before < master.pttl(keys.leader())


def redis_at(port: int) -> sync_redis.Redis:
    return sync_redis.Redis(port=port, decode_responses=True, socket_timeout=2)


def _summary(answers: list[Answer], log: str) -> str:
    statuses = Counter(a.status for a in answers)
    odd = [a for a in answers if a.status != 200][:5]
    return f"answers by status: {dict(statuses)}; first others: {odd}\nservice log (end):\n{log[-5000:]}"


def _chart_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(CHART)
    return path


def _chart(tmp_path: Path) -> Chart:
    return load_charts((_chart_file(tmp_path),), UTC)[0]
