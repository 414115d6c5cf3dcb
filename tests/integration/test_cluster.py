"""`serve --redis-cluster`: the real service on a real 3-master Redis Cluster, charts on different masters.

One cluster (tests/support/cluster.py) and one two-worker service serve the whole module. The
charts' names are chosen so that their `{CHART}` hash tags fall on three different masters,
which the first test checks with the cluster's own CLUSTER KEYSLOT and slot map. Then the
walkthrough (README, docs/index.md) runs across them through HTTP and the command line (`status`, `reset`),
with a long-poll woken by a move on each master, a time state moved by the leader alone, a
burst of concurrent PUTs counted exactly, a chart whose slot is migrated to another master
under the running service (MOVED: the service re-reads the slot map), and, last, the master
holding the move subscription killed (the subscription moves to another master).
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stateservice.store import keys
from tests.support import charts
from tests.support.cluster import Cluster, ClusterNode
from tests.support.service import ServiceProcess, Services, http, run_cli, wait_until

# alpha, delta, beta and gamma: slots on masters 0, 1, 2 and 0 of the evenly split cluster
GATES = charts.chart(
    "alpha",
    "green",
    charts.increment("green", "red", 2, key="count"),
    charts.increment("red", "blue", 1, key="count"),
    charts.final("blue"),
)

SOAK = charts.chart(
    "delta",
    "wait",
    charts.timed("wait", "open", "elapsed", "1s"),
    charts.increment("open", "done", 1),
    charts.final("done"),
)

BURST = charts.chart("%s", "open", charts.increment("open", "done", 100000, key="reports"), charts.final("done"))


class Fleet:
    def __init__(self, cluster: Cluster, service: ServiceProcess, charts: dict[str, Path], cwd: Path) -> None:
        self.cluster = cluster
        self.service = service
        self.charts = charts
        self.cwd = cwd

    def get(self, chart: str, query: str) -> tuple[int, dict[str, str], str]:
        return http("GET", f"{self.service.url}/charts/{chart}/state?{query}")

    def put(self, chart: str, query: str) -> tuple[int, dict[str, str], str]:
        return http("PUT", f"{self.service.url}/charts/{chart}/state?{query}")

    def view(self, chart: str) -> dict[str, object]:
        status, _, body = http("GET", f"{self.service.url}/charts/{chart}")
        assert status == 200, body
        result: dict[str, object] = json.loads(body)
        return result

    def cli(self, *args: str | Path) -> tuple[int, str, str]:
        done = run_cli(*args, "--redis", self.cluster.url, "--redis-cluster", cwd=self.cwd)
        return done.returncode, done.stdout, done.stderr

    def stored_state(self, chart: str) -> str | None:
        """The chart's current_state, read from its master directly (not through the service)."""
        with self.cluster.owner(keys.chart_state(chart)).client() as client:
            state: str | None = client.hget(keys.chart_state(chart), keys.CURRENT_STATE)
            return state


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("cluster")
    cluster = Cluster(root / "redis")
    cluster.start()
    services = Services(root)
    try:
        texts = {"alpha": GATES, "delta": SOAK, "beta": BURST % "beta", "gamma": BURST % "gamma"}
        paths = {}
        for name, text in texts.items():
            paths[name] = root / f"{name}.yaml"
            paths[name].write_text(textwrap.dedent(text))
        service = services.start(
            *paths.values(), redis_url=cluster.url, workers=2, args=["--redis-cluster", "--lease-ttl", "1"]
        )
        yield Fleet(cluster, service, paths, root)
        assert service.stop() == 0
    finally:
        services.cleanup()
        cluster.stop()


def test_charts_live_on_different_masters(fleet: Fleet) -> None:
    owners = {name: fleet.cluster.owner(keys.chart_state(name)) for name in ("alpha", "delta", "beta")}
    assert len({node.port for node in owners.values()}) == 3
    for name, node in owners.items():  # every key of a chart is on its master, and only there
        with node.client() as client:
            slot = client.execute_command("CLUSTER KEYSLOT", keys.chart_state(name))
            assert client.execute_command("CLUSTER KEYSLOT", keys.chart_definition(name)) == slot
            assert client.hget(keys.chart_definition(name), "path") == str(fleet.charts[name])
            assert client.hget(keys.chart_state(name), keys.CURRENT_STATE) is not None
        for other in fleet.cluster.nodes:
            if other is not node:
                with other.client() as client:
                    assert client.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0
    # the charts index (its own slot, written after each chart's transaction) names them all
    with fleet.cluster.owner(keys.charts_index()).client() as client:
        assert client.smembers(keys.charts_index()) >= {"alpha", "delta", "beta", "gamma"}
    assert http("GET", f"{fleet.service.url}/readyz")[0] == 200


def test_walkthrough_gate_put_idempotency_and_history(fleet: Fleet) -> None:
    assert fleet.get("alpha", "state=green")[0] == 200
    status, _, body = fleet.get("alpha", "state=red")
    assert status == 406 and json.loads(body)["current_state"] == "green"
    assert fleet.get("alpha", "state=gren")[0] == 404

    status, headers, _ = fleet.put("alpha", "state=green&host=web1")
    assert (status, headers["Stateservice-Counted"], headers["Stateservice-State"]) == (200, "true", "green")
    status, headers, _ = fleet.put("alpha", "state=green&host=web1")  # a re-run counts nothing
    assert (status, headers["Stateservice-Counted"], headers["Stateservice-State"]) == (200, "false", "green")
    status, headers, _ = fleet.put("alpha", "state=green&host=web2")
    assert (status, headers["Stateservice-Counted"], headers["Stateservice-State"]) == (200, "true", "red")
    assert fleet.get("alpha", "state=red")[0] == 200
    assert fleet.get("alpha", "state=green")[0] == 406
    assert fleet.put("alpha", "state=red&host=web1")[1]["Stateservice-State"] == "blue"
    assert fleet.stored_state("alpha") == "blue"

    status, _, body = http("GET", f"{fleet.service.url}/charts/alpha/history")
    moves = [(r["from"], r["to"], r["cause"], r["host"]) for r in json.loads(body)["history"]]
    assert moves[:2] == [("red", "blue", "put", "web1"), ("green", "red", "put", "web2")]
    status, _, body = http("GET", f"{fleet.service.url}/charts")
    listed = {c["name"]: c["current_state"] for c in json.loads(body)["charts"]}
    assert listed["alpha"] == "blue" and set(listed) == {"alpha", "delta", "beta", "gamma"}


def test_status_and_reset_through_the_command_line(fleet: Fleet) -> None:
    fleet.put("beta", "state=open&host=status-check")
    code, out, err = fleet.cli("status", "--json")
    assert code == 0, err
    views = {view["name"]: view for view in json.loads(out)}
    assert set(views) == {"alpha", "delta", "beta", "gamma"}
    assert "status-check" in views["beta"]["hosts_counted"]

    code, out, err = fleet.cli("reset", fleet.charts["alpha"], "--yes")
    assert code == 0, err
    assert out.strip().startswith("chart 'alpha' reset:") and out.strip().endswith("-> green")
    assert fleet.stored_state("alpha") == "green"
    assert fleet.get("alpha", "state=green")[0] == 200
    code, out, err = fleet.cli("status", "alpha")
    assert code == 0 and "current_state  green" in out, err
    status, _, body = http("GET", f"{fleet.service.url}/charts/alpha/history?limit=1")
    record = json.loads(body)["history"][0]
    assert status == 200
    assert (record["cause"], record["to"], record["actor"].startswith("cli:")) == ("reset", "green", True)


def test_long_polls_on_every_master_wake_at_the_move(fleet: Fleet) -> None:
    for name in ("alpha", "beta"):
        fleet.cli("reset", fleet.charts[name], "--yes")
    fleet.cli("reset", fleet.charts["delta"], "--yes")
    assert wait_until(lambda: fleet.stored_state("delta") == "open", timeout=10)
    waits = {"alpha": "red", "beta": "done", "delta": "done"}  # one chart on each master
    answers: dict[str, tuple[int, float]] = {}

    def wait(chart: str, state: str) -> None:
        try:
            status = fleet.get(chart, f"state={state}&wait=20")[0]
        except OSError:
            status = 0  # the assertion below says which chart did not answer
        answers[chart] = (status, time.monotonic())

    threads = [threading.Thread(target=wait, args=item) for item in waits.items()]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # the long-polls are parked (nothing else can answer them before 5 s)
    assert answers == {}
    moved_at = time.monotonic()
    _move(fleet, "alpha")
    _move(fleet, "beta")
    fleet.put("delta", "state=open&host=a")
    for thread in threads:
        thread.join(25)
    assert {chart: status for chart, (status, _) in answers.items()} == {"alpha": 200, "beta": 200, "delta": 200}
    # woken by the published move, not by the waiters' own re-read every 5 s
    assert max(at for _, at in answers.values()) - moved_at < 3.0


def test_time_state_moved_by_the_leader_alone(fleet: Fleet) -> None:
    code, _, err = fleet.cli("reset", fleet.charts["delta"], "--yes")
    assert code == 0, err
    assert fleet.stored_state("delta") == "wait"
    # no request reads delta meanwhile: only the leader's scheduler can move it
    assert wait_until(lambda: fleet.stored_state("delta") == "open", timeout=10)
    status, _, body = http("GET", f"{fleet.service.url}/charts/delta/history?limit=1")
    record = json.loads(body)["history"][0]
    assert (record["from"], record["to"], record["cause"], record["actor"]) == ("wait", "open", "time", "time")
    status, _, body = http("GET", f"{fleet.service.url}/leader")
    assert status == 200 and json.loads(body)["id"] is not None


def test_concurrent_put_burst_counts_exactly(fleet: Fleet) -> None:
    code, _, err = fleet.cli("reset", fleet.charts["beta"], "--yes")
    assert code == 0, err
    reports, hosts = 240, 60

    def report(i: int) -> int:
        # a third report without a host, the rest from 60 hosts that each report three times
        query = "state=open" if i % 3 == 0 else f"state=open&host=h{i % hosts}"
        return fleet.put("beta", query)[0]

    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(report, range(reports)))
    assert statuses == [200] * reports
    without_host = len(range(0, reports, 3))
    counted = without_host + len({i % hosts for i in range(reports) if i % 3})
    view = fleet.view("beta")
    assert view["current_state"] == "open"
    assert len(view["hosts_counted"]) == len({i % hosts for i in range(reports) if i % 3})  # type: ignore[arg-type]
    with fleet.cluster.owner(keys.chart_state("beta")).client() as client:
        assert int(client.hget(keys.chart_state("beta"), keys.counter_field("open"))) == counted


def test_a_chart_whose_slot_moves_to_another_master(fleet: Fleet) -> None:
    key = keys.chart_state("gamma")
    source = fleet.cluster.owner(key)
    target = next(n for n in fleet.cluster.nodes if n is not source)
    assert fleet.put("gamma", "state=open&host=before")[0] == 200
    _migrate_slot(fleet.cluster, key, source, target)
    assert fleet.cluster.owner(key) is target
    # the service still has the old map: its WATCH gets MOVED, it re-reads the map and retries there
    status, headers, _ = fleet.put("gamma", "state=open&host=after")
    assert (status, headers["Stateservice-Counted"]) == (200, "true")
    assert fleet.get("gamma", "state=open")[0] == 200
    assert sorted(fleet.view("gamma")["hosts_counted"]) == ["after", "before"]  # type: ignore[type-var]
    with target.client() as client:
        assert int(client.hget(key, keys.counter_field("open"))) == 2


def test_the_subscribed_master_dies_and_the_subscription_moves(fleet: Fleet) -> None:
    """Last: it kills a master (and restarts it empty) under the shared service."""
    subscribed = [node for node in fleet.cluster.nodes if _subscribers(node)]
    assert subscribed, "no master holds the service's move subscription"
    victim = subscribed[0]
    # a chart that moves by a report (so only the published move can wake its long-poll early)
    survivor = next(name for name in ("alpha", "beta") if fleet.cluster.owner(keys.chart_state(name)) is not victim)
    victims_chart = next(
        name for name in ("alpha", "delta", "beta") if fleet.cluster.owner(keys.chart_state(name)) is victim
    )
    fleet.cli("reset", fleet.charts[survivor], "--yes")
    victim.kill()
    try:
        # every worker subscribes again, on a master that is alive (within about a second)
        assert wait_until(lambda: sum(_subscribers(n) for n in fleet.cluster.nodes if n is not victim) >= 2, 10)
        started = time.monotonic()
        assert fleet.get(victims_chart, "state=x")[0] == 503  # that master's charts are unavailable, fast
        assert time.monotonic() - started < 3.0
        assert wait_until(lambda: http("GET", f"{fleet.service.url}/readyz")[0] == 200, 5)
        state = {"alpha": "red", "beta": "done"}[survivor]
        answers: list[tuple[int, float]] = []

        def wait() -> None:
            try:
                answers.append((fleet.get(survivor, f"state={state}&wait=20")[0], time.monotonic()))
            except OSError:
                answers.append((0, time.monotonic()))

        poll = threading.Thread(target=wait)
        poll.start()
        time.sleep(0.5)
        moved_at = time.monotonic()
        _move(fleet, survivor)
        poll.join(25)
        assert answers and answers[0][0] == 200
        assert answers[0][1] - moved_at < 3.0
    finally:
        victim.start()
        fleet.cluster.wait_ok()


def _move(fleet: Fleet, chart: str) -> None:
    """Move alpha (green -> red) or beta (open -> done) by reports."""
    if chart == "alpha":
        fleet.put("alpha", "state=green&host=a")
        fleet.put("alpha", "state=green&host=b")
    else:
        with fleet.cluster.owner(keys.chart_state("beta")).client() as client:  # an operator's repair, then a report
            client.hset(keys.chart_state("beta"), keys.counter_field("open"), 99999)
        fleet.put("beta", "state=open")


def _subscribers(node: ClusterNode) -> int:
    """Pattern subscriptions on `node` (0 if it is down)."""
    if node.proc is None:
        return 0
    with node.client() as client:
        return sum(1 for c in client.client_list() if int(c.get("psub", 0)) > 0)


def _migrate_slot(cluster: Cluster, key: str, source: ClusterNode, target: ClusterNode) -> None:
    """Move `key`'s slot, with its keys, from `source` to `target` (as redis-cli --cluster reshard does)."""
    with source.client() as src, target.client() as dst:
        slot = int(src.execute_command("CLUSTER KEYSLOT", key))
        src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        while moving := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *moving)
        for node in cluster.nodes:
            with node.client() as client:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    cluster.wait_ok()


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--redis-cluster"], {}),  # the embedded Redis is one server
        ([], {"STATESERVICE_REDIS_CLUSTER": "on"}),
        (["--redis-cluster", "--redis", "unix:///tmp/redis.sock"], {}),
    ],
)
def test_cluster_needs_a_redis_url_of_a_node(tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
    chart = tmp_path / "alpha.yaml"
    chart.write_text(textwrap.dedent(GATES))
    done = run_cli("serve", "--chart", chart, "--data-dir", tmp_path / "data", *args, cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert "--redis-cluster needs --redis redis://HOST:PORT" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before any embedded redis-server started
