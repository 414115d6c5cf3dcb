"""`--charts DIR`: serve, reload and validate every chart file of a directory; `GET /charts` by pages."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from stateservice.core.chart import Chart
from tests.support.app import MakeClient
from tests.support.charts import wave, wave_text
from tests.support.service import ServiceProcess, Services, http, run_cli

pytestmark = pytest.mark.slow


def listed(service: ServiceProcess, query: str = "") -> dict[str, Any]:
    status, _, body = http("GET", f"{service.url}/charts{query}")
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def names(service: ServiceProcess) -> list[str]:
    return [c["name"] for c in listed(service)["charts"]]


def write(directory: Path, stem: str, target: int = 1, name: str | None = None) -> Path:
    path = directory / f"{stem}.yaml"
    path.write_text(wave_text(target, name=name or stem))
    return path


def test_serve_a_directory_reload_added_changed_removed_and_keep_all_on_a_bad_file(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    charts = tmp_path / "charts"
    (charts / "nested").mkdir(parents=True)
    for stem in ("bravo", "alpha", "charlie"):
        write(charts, stem)
    write(charts / "nested", "deep")  # not recursive
    (charts / "notes.txt").write_text("not a chart\n")
    single = write(tmp_path, "solo")
    service = services.start(single, redis_url=redis_url, args=["--charts", str(charts)])
    assert names(service) == ["alpha", "bravo", "charlie", "solo"]
    # the preflight registered every chart before the worker started: the worker does not register them again
    assert len(service.events("chart_loaded")) == 4 and service.events("chart_registered") == []

    write(charts, "delta")  # added
    write(charts, "alpha", target=2)  # changed
    (charts / "bravo.yaml").unlink()  # removed
    os.kill(service.pid, signal.SIGHUP)
    reloaded = service.wait_for("charts_reloaded")
    assert (reloaded["added"], reloaded["changed"], reloaded["removed"]) == (["delta"], ["alpha"], ["bravo"])
    assert sorted(e["chart"] for e in service.events("chart_registered")) == ["alpha", "delta"]
    assert names(service) == ["alpha", "charlie", "delta", "solo"]
    assert json.loads(http("GET", f"{service.url}/charts/bravo")[2])["error"] == "unknown_chart"

    write(charts, "echo")
    (charts / "charlie.yaml").write_text("current_state: gate\nstates:\n  - name: gate\n    func: often\n")
    os.kill(service.pid, signal.SIGHUP)
    failed = service.wait_for("charts_reload_failed")
    assert any(p.startswith(f"{charts / 'charlie.yaml'}:4: unknown func 'often'") for p in failed["problems"]), failed
    assert names(service) == ["alpha", "charlie", "delta", "solo"]  # all or nothing: echo waits too

    for path in charts.glob("*.yaml"):
        path.unlink()
    os.kill(service.pid, signal.SIGHUP)
    failed = service.wait_for("charts_reload_failed", count=2)
    assert failed["problems"] == [f"{charts}: no chart files (*.yaml) in the chart directory"]
    assert names(service) == ["alpha", "charlie", "delta", "solo"]
    assert service.stop() == 0


@pytest.mark.parametrize("case", ["missing", "empty", "duplicate"])
def test_serve_refuses_a_bad_directory(redis_url: str, tmp_path: Path, case: str) -> None:
    charts = tmp_path / "charts"
    if case != "missing":
        charts.mkdir()
    if case == "duplicate":
        write(charts, "a", name="wave")
        write(charts, "b", name="wave")
    result = run_cli(
        "serve", "--port", "0", "--redis", redis_url, cwd=tmp_path, env={"STATESERVICE_CHARTS": str(charts)}
    )

    assert result.returncode == 1, result
    expected = {
        "missing": f"{charts}: cannot read the chart directory",
        "empty": f"{charts}: no chart files (*.yaml) in the chart directory",
        "duplicate": f"{charts / 'b.yaml'}:1: chart name 'wave' is already used by {charts / 'a.yaml'}",
    }[case]
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_validate_a_directory_given_or_by_charts(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    write(good, "a")
    write(good, "b")
    (bad / "c.yaml").write_text("current_state: [\n")

    result = run_cli("validate", good, cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == [
        f"{good / 'a.yaml'}: ok: chart 'a', 3 states, starts at 'canary'",
        f"{good / 'b.yaml'}: ok: chart 'b', 3 states, starts at 'canary'",
    ]

    result = run_cli("validate", "--charts", bad, good / "a.yaml", cwd=tmp_path)
    assert result.returncode == 1, result
    assert result.stderr.startswith(f"{bad / 'c.yaml'}:2: invalid YAML"), result.stderr

    (tmp_path / "empty").mkdir()
    result = run_cli("validate", tmp_path / "empty", cwd=tmp_path, env={"STATESERVICE_CHARTS": str(good)})
    assert result.returncode == 1, result
    assert f"{tmp_path / 'empty'}: no chart files" in result.stderr and "'b', 3 states" in result.stdout, result


def charts_named(*names: str) -> list[Chart]:
    return [wave(1, name=name) for name in names]


async def test_get_charts_by_pages(serve: MakeClient) -> None:
    client = await serve(*charts_named("e", "a", "d", "b", "c"))

    everything = await (await client.get("/charts")).json()
    assert [c["name"] for c in everything["charts"]] == ["a", "b", "c", "d", "e"]
    assert "cursor" not in everything  # no limit, no pages: as before pagination

    seen, query, pages = [], "/charts?limit=2", 0
    while True:
        resp = await client.get(query)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        pages += 1
        seen += page["charts"]
        if page["cursor"] is None:
            break
        query = f"/charts?limit=2&cursor={page['cursor']}"
    assert pages == 3 and seen == everything["charts"]

    last = await (await client.get("/charts?limit=5")).json()
    assert last["cursor"] is None and len(last["charts"]) == 5


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=two", "limit=", "limit=2&cursor=", "limit=2&cursor=%2Fnot-a-cursor"]
)
async def test_get_charts_refuses_a_bad_limit_or_cursor(serve: MakeClient, query: str) -> None:
    client = await serve(*charts_named("a", "b"))

    resp = await client.get(f"/charts?{query}")

    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "bad_request" and body["status"] == 400
    assert query.rpartition("&")[2].split("=")[0] in body["message"], body
