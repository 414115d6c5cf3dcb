"""The service's lifecycle signals against real processes: SIGHUP reloads the chart files, SIGTERM stops gracefully.

SIGHUP goes to the parent (`serve`), which forwards it to every worker; each worker re-reads the files
with the start-up checks and swaps the new charts in only if all of them parse and register. The
`Reloader` itself is also driven directly, without signals, for what is awkward through a process.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from stateservice.charts.files import load_charts
from stateservice.charts.reload import Reloader
from stateservice.security.tokens import hash_secret
from stateservice.store.charts import ChartStore
from stateservice.store.redis.connect import connect
from stateservice.store.registrar import Registrar
from tests.support.service import ServiceProcess, Services, http, wait_until

pytestmark = pytest.mark.slow


def gate(needed: int, *, name: str = "wave", last: str = "done") -> str:
    """A chart whose gate opens after `needed` host reports."""
    return f"""\
name: {name}
current_state: gate
states:
  - name: gate
    func: increment
    current: {{key: hosts, value: 0}}
    target: {{name: {last}, when: {{key: hosts, value: {needed}}}}}
  - name: {last}
"""


def events(service: ServiceProcess, name: str) -> list[dict[str, Any]]:
    """The events called `name`, also from lines where two workers' writes ran together on the pipe."""
    decoder = json.JSONDecoder()
    found = []
    for line in service.stderr.splitlines():
        at = 0
        while (start := line.find("{", at)) != -1:
            try:
                event, at = decoder.raw_decode(line, start)
            except ValueError:
                break
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
    return found


def wait_events(service: ServiceProcess, name: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    if not wait_until(lambda: len(events(service, name)) >= count or not service.running, timeout):
        raise AssertionError(f"fewer than {count} {name!r} events\n{service.stderr}")
    assert service.running, service.stderr
    return events(service, name)


def digest_served(service: ServiceProcess, chart: str = "wave") -> str:
    status, _, body = http("GET", f"{service.url}/charts/{chart}")
    assert status == 200, body
    return str(json.loads(body)["digest"])


def all_workers_serve(service: ServiceProcess, digest: str, tries: int = 30) -> bool:
    """Every one of `tries` requests (new connections, so spread over the workers) sees `digest`."""
    return all(digest_served(service) == digest for _ in range(tries))


def put(service: ServiceProcess, state: str, host: str) -> str:
    """Report `state` for `host`; the chart's state afterwards."""
    status, headers, body = http("PUT", f"{service.url}/charts/wave/state?state={state}&host={host}")
    assert status == 200, body
    return next(v for k, v in headers.items() if k.lower() == "stateservice-state")


def hup(service: ServiceProcess) -> None:
    os.kill(service.pid, signal.SIGHUP)


def load_digest(path: Path) -> str:
    return load_charts([path], UTC)[0].digest


# -- SIGHUP through real processes ---------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_the_chart_in_every_worker(
    services: Services, redis_url: str, plain_sync: redis.Redis, tmp_path: Path, workers: int
) -> None:
    chart = tmp_path / "wave.yaml"
    chart.write_text(gate(1))
    service = services.start(chart, redis_url=redis_url, workers=workers)
    old = load_digest(chart)
    assert all_workers_serve(service, old)

    chart.write_text(gate(2))
    new = load_digest(chart)
    hup(service)
    wait_events(service, "charts_reloaded", workers)

    reloaded = events(service, "charts_reloaded")
    assert len({e["pid"] for e in reloaded}) == workers
    assert all(e["charts"] == {"wave": new[:12]} and e["changed"] == ["wave"] for e in reloaded), reloaded
    assert all_workers_serve(service, new)
    # the new rule: one report no longer opens the gate, a second one does
    assert put(service, "gate", "web-1") == "gate"
    assert plain_sync.hget("stateservice:{wave}", "current_state") == "gate"
    assert put(service, "gate", "web-2") == "done"
    assert service.running
    assert service.stop() == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_a_broken_chart_file_keeps_the_old_charts(
    services: Services, redis_url: str, tmp_path: Path, workers: int
) -> None:
    chart = tmp_path / "wave.yaml"
    chart.write_text(gate(1))
    service = services.start(chart, redis_url=redis_url, workers=workers)
    old = load_digest(chart)

    chart.write_text(gate(1).replace("target: {name: done", "target: {name: nowhere"))
    hup(service)
    wait_events(service, "charts_reload_failed", workers)

    failed = events(service, "charts_reload_failed")
    assert len({e["pid"] for e in failed}) == workers
    for event in failed:
        assert event["kept"] == ["wave"]
        assert any(p.startswith(f"{chart}:7: ") and "nowhere" in p for p in event["problems"]), event
    assert not events(service, "charts_reloaded")
    assert all_workers_serve(service, old)
    assert put(service, "gate", "web-1") == "done"  # the old rule still applies
    assert service.stop() == 0


def test_a_reload_that_removes_the_current_state_keeps_the_old_charts(
    services: Services, redis_url: str, plain_sync: redis.Redis, tmp_path: Path
) -> None:
    chart = tmp_path / "wave.yaml"
    chart.write_text(gate(1))
    service = services.start(chart, redis_url=redis_url, workers=2)
    old = load_digest(chart)
    assert put(service, "gate", "web-1") == "done"

    chart.write_text(gate(1, last="finished"))  # `done`, the current state, is gone
    hup(service)
    wait_events(service, "charts_reload_failed", 2)

    for event in events(service, "charts_reload_failed"):
        assert any("'done'" in p and "stateservice reset" in p for p in event["problems"]), event
    assert all_workers_serve(service, old)
    assert plain_sync.hget("stateservice:{wave}", "current_state") == "done"
    assert plain_sync.hget("stateservice:{wave}:definition", "digest") in (old, None)
    assert service.stop() == 0


def test_a_second_sighup_after_a_fix_reloads(services: Services, redis_url: str, tmp_path: Path) -> None:
    chart = tmp_path / "wave.yaml"
    chart.write_text(gate(1))
    service = services.start(chart, redis_url=redis_url, workers=2)

    chart.write_text("name: wave\nstates: [\n")
    hup(service)
    wait_events(service, "charts_reload_failed", 2)
    chart.write_text(gate(3))
    hup(service)
    wait_events(service, "charts_reloaded", 2)

    assert all_workers_serve(service, load_digest(chart))
    assert service.stop() == 0


# -- SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_answers_a_long_poll_503_and_releases_the_lease(
    services: Services, redis_url: str, plain_sync: redis.Redis, tmp_path: Path
) -> None:
    chart = tmp_path / "wave.yaml"
    chart.write_text(gate(1))
    args = ["--lease-ttl", "30"]
    first = services.start(chart, redis_url=redis_url, workers=2, args=args)
    assert wait_until(lambda: plain_sync.get("stateservice:leader") is not None, 5)
    other = services.start(chart, redis_url=redis_url, args=args)
    old_leader = json.loads(plain_sync.get("stateservice:leader") or "{}")["id"]
    assert old_leader.endswith(tuple(f":{pid}" for pid in worker_pids(first))), old_leader
    result: list[tuple[int, dict[str, str], str]] = []

    def poll() -> None:
        result.append(http("GET", f"{first.url}/state?state=done&wait=60", timeout=30))

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(1.0)  # the request is in and waiting
    assert not result

    stopping = time.monotonic()
    assert first.stop() == 0
    thread.join(5)

    assert result, "the waiting request got no answer"
    status, headers, body = result[0]
    assert status == 503, body
    assert headers.get("Retry-After"), headers

    def new_leader() -> bool:
        status, _, body = http("GET", f"{other.url}/leader")
        return status == 200 and json.loads(body).get("id") not in (None, old_leader)

    assert wait_until(lambda: plain_sync.get("stateservice:leader") is None or new_leader(), 1.5)
    assert time.monotonic() - stopping < 15
    # substring: two workers' lines on one pipe can interleave, so the line may not parse as JSON
    assert '"event":"leader_released"' in first.stderr, first.stderr[-6000:]
    assert other.stop() == 0


def worker_pids(service: ServiceProcess) -> set[int]:
    return {int(e["pid"]) for e in events(service, "worker_started")}


# -- the Reloader without signals -----------------------------------------------------------------


async def test_a_chart_renamed_by_its_file_replaces_the_old_name(redis_url: str, tmp_path: Path) -> None:
    chart = tmp_path / "wave.yaml"
    chart.write_text(gate(1))
    charts = {c.name: c for c in load_charts([chart], UTC)}
    served = charts  # what the app and scheduler hold: the same dict
    client = connect(redis_url)
    try:
        registrar = Registrar(ChartStore(client))
        await registrar.try_all(charts.values())
        reloader = Reloader(charts, [chart], UTC, registrar)

        chart.write_text(gate(2, name="tide"))
        with capture_logs() as logs:
            assert await reloader.reload()
        assert served is charts and list(served) == ["tide"]
        assert await client.hget("stateservice:{tide}", "current_state") == "gate"
        [event] = [e for e in logs if e["event"] == "charts_reloaded"]
        assert (event["added"], event["removed"]) == (["tide"], ["wave"])
    finally:
        await client.aclose()


async def test_a_reload_without_redis_keeps_the_old_charts(redis_url: str, tmp_path: Path) -> None:
    chart = tmp_path / "wave.yaml"
    chart.write_text(gate(1))
    charts = {c.name: c for c in load_charts([chart], UTC)}
    old = dict(charts)
    client = connect("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        reloader = Reloader(charts, [chart], UTC, Registrar(ChartStore(client)))
        chart.write_text(gate(2))
        with capture_logs() as logs:
            assert not await reloader.reload()
        assert charts == old
        [event] = [e for e in logs if e["event"] == "charts_reload_failed"]
        assert "cannot register chart 'wave'" in event["problems"][0]
    finally:
        await client.aclose()


async def test_an_unchanged_file_registers_nothing_again(redis_url: str, tmp_path: Path) -> None:
    chart = tmp_path / "wave.yaml"
    chart.write_text(gate(1))
    charts = {c.name: c for c in load_charts([chart], UTC)}
    client = connect(redis_url)
    try:
        registrar = Registrar(ChartStore(client))
        await registrar.try_all(charts.values())
        with capture_logs() as logs:
            assert await Reloader(charts, [chart], UTC, registrar).reload()
        assert not [e for e in logs if e["event"] == "chart_registered"]
        [event] = [e for e in logs if e["event"] == "charts_reloaded"]
        assert event["changed"] == []
    finally:
        await client.aclose()


def test_a_worker_respawned_after_a_reload_serves_the_reloaded_charts(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    chart = tmp_path / "wave.yaml"
    chart.write_text(gate(1))
    service = services.start(chart, redis_url=redis_url, workers=2)
    chart.write_text(gate(2))
    hup(service)
    wait_events(service, "charts_reloaded", 2)

    victim = int(events(service, "worker_spawned")[0]["worker_pid"])
    os.kill(victim, signal.SIGKILL)
    wait_events(service, "worker_spawned", 3)
    wait_events(service, "charts_reloaded", 3)  # the new worker reloaded at start

    assert all_workers_serve(service, load_digest(chart))
    assert service.stop() == 0


def test_workers_trust_the_start_up_registration_but_one_replacing_a_dead_worker_registers(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    chart = tmp_path / "wave.yaml"
    chart.write_text(gate(1))
    service = services.start(chart, redis_url=redis_url, workers=2)
    wait_events(service, "worker_started", 2)
    assert events(service, "chart_loaded") and not events(service, "chart_registered")

    victim = int(events(service, "worker_spawned")[0]["worker_pid"])
    os.kill(victim, signal.SIGKILL)  # Redis may have lost what start-up wrote since: the new worker writes it again
    [spawned] = wait_events(service, "worker_spawned", 3)[2:]
    [registered] = wait_events(service, "chart_registered", 1)
    assert (registered["chart"], registered["pid"]) == ("wave", spawned["worker_pid"])
    assert service.stop() == 0


# -- SIGHUP and the tokens file --------------------------------------------------------------------


def tokens_file(path: Path, **secrets: str) -> Path:
    """A tokens file giving each `name=secret` every scope."""
    entries = "".join(
        f"  - {{name: {name}, sha256: {hash_secret(secret)}, scopes: [read, report, admin]}}\n"
        for name, secret in secrets.items()
    )
    path.write_text("tokens:\n" + entries)
    return path


def answers_with(service: ServiceProcess, secret: str, times: int = 8) -> set[int]:
    """The statuses of `times` GETs with `secret` (several: with two workers, each should be asked)."""
    statuses = set()
    for _ in range(times):
        request = urllib.request.Request(f"{service.url}/charts/wave", headers={"Authorization": f"Bearer {secret}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                statuses.add(response.status)
        except urllib.error.HTTPError as exc:
            statuses.add(exc.code)
    return statuses


def test_sighup_reloads_the_tokens_file_in_every_worker_and_keeps_them_on_a_bad_one(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    chart = tmp_path / "wave.yaml"
    chart.write_text(gate(1))
    tokens = tokens_file(tmp_path / "tokens.yaml", old="old-secret")
    service = services.start(chart, redis_url=redis_url, workers=2, args=["--tokens", str(tokens)])
    assert answers_with(service, "old-secret") == {200}
    assert answers_with(service, "new-secret") == {401}

    tokens_file(tokens, new="new-secret")  # rotated: the old token removed, a new one added
    hup(service)
    wait_events(service, "tokens_reloaded", 2)

    reloaded = events(service, "tokens_reloaded")
    assert len({e["pid"] for e in reloaded}) == 2
    assert all(e["added"] == ["new"] and e["removed"] == ["old"] and e["tokens"] == 1 for e in reloaded), reloaded
    assert answers_with(service, "new-secret") == {200}
    assert answers_with(service, "old-secret") == {401}
    assert "new-secret" not in service.stderr  # secrets are never logged

    tokens.write_text("tokens: [{name: broken, sha256: nothex, scopes: [read]}]\n")
    hup(service)
    wait_events(service, "tokens_reload_failed", 2)

    failed = events(service, "tokens_reload_failed")
    assert all(e["kept"] == ["new"] and "sha256 must be" in " ".join(e["problems"]) for e in failed), failed
    assert answers_with(service, "new-secret") == {200}
    assert len(events(service, "charts_reloaded")) == 4  # the charts reloaded all the same
    assert service.stop() == 0


def test_a_worker_respawned_after_the_tokens_file_broke_has_the_last_good_tokens_not_revoked_ones(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    chart = tmp_path / "wave.yaml"
    chart.write_text(gate(1))
    tokens = tokens_file(tmp_path / "tokens.yaml", ops="ops-secret", leaked="leaked-secret")
    service = services.start(chart, redis_url=redis_url, workers=2, args=["--tokens", str(tokens)])
    tokens_file(tokens, ops="ops-secret")  # revoke `leaked`
    hup(service)
    wait_events(service, "tokens_reloaded", 2)
    tokens.write_text("not: [the, right, shape]\n")  # then the file breaks
    hup(service)
    wait_events(service, "tokens_reload_failed", 2)

    victim = int(events(service, "worker_spawned")[0]["worker_pid"])
    os.kill(victim, signal.SIGKILL)
    wait_events(service, "worker_spawned", 3)
    wait_events(service, "tokens_reload_failed", 3)  # the new worker tried the file at start and kept its tokens

    assert answers_with(service, "leaked-secret", times=16) == {401}  # in every worker, the new one too
    assert answers_with(service, "ops-secret", times=16) == {200}
    assert service.stop() == 0
