"""`stateservice gate` and `stateservice report` against a live service: exit codes 0, 1, 2."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.service import REPO, ServiceProcess, Services, http, run_cli

EXAMPLE = REPO / "examples" / "states.yaml"


@pytest.fixture
def service(services: Services, redis_url: str) -> ServiceProcess:
    return services.start(EXAMPLE, redis_url=redis_url)


def cli(service: ServiceProcess, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=service.cwd, env={"STATESERVICE_URL": service.url, **(env or {})})


def test_gate_is_0_when_current_1_when_not_2_on_error(service: ServiceProcess) -> None:
    assert cli(service, "gate", "green_state").returncode == 0
    not_current = cli(service, "gate", "red_state")
    assert not_current.returncode == 1
    assert "not current" in not_current.stderr
    unknown = cli(service, "gate", "gren_state")
    assert unknown.returncode == 2
    assert "HTTP 404" in unknown.stderr and "no state 'gren_state'" in unknown.stderr


def test_report_is_idempotent_and_its_exit_codes(service: ServiceProcess) -> None:
    assert cli(service, "report", "green_state", "--host", "web1").returncode == 0
    assert http("GET", f"{service.url}/state?state=red_state")[0] == 200
    # the chart moved on: green is no longer current
    assert cli(service, "report", "green_state", "--host", "web1").returncode == 1
    assert cli(service, "report", "blue_state", "--host", "web1").returncode == 1
    assert cli(service, "report", "red_state", "--host", "web1").returncode == 0
    final = cli(service, "report", "blue_state", "--host", "web1")
    assert final.returncode == 2 and "HTTP 409" in final.stderr


def test_gate_waits_with_the_server_long_poll(service: ServiceProcess) -> None:
    def report_soon() -> None:
        time.sleep(1.0)
        http("PUT", f"{service.url}/state?state=green_state&host=web1")

    thread = threading.Thread(target=report_soon)
    started = time.monotonic()
    thread.start()
    waited = cli(service, "gate", "red_state", "--wait", "10")
    thread.join()
    assert waited.returncode == 0, waited.stderr
    assert time.monotonic() - started < 8
    requests = [e for e in service.events("request") if e.get("path") == "/state" and e.get("method") == "GET"]
    assert len(requests) == 1, "one long-poll, not a polling loop"


def test_gate_wait_ends_with_1(service: ServiceProcess) -> None:
    started = time.monotonic()
    assert cli(service, "gate", "blue_state", "--wait", "1.5").returncode == 1
    assert 1.4 < time.monotonic() - started < 10


def test_url_flag_and_unreachable_service(service: ServiceProcess) -> None:
    assert run_cli("gate", "green_state", "--url", service.url, cwd=service.cwd).returncode == 0
    gone = run_cli("gate", "green_state", "--url", "http://127.0.0.1:9", cwd=service.cwd)
    assert gone.returncode == 2
    assert "cannot reach http://127.0.0.1:9" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_chart_flag_selects_a_chart(services: Services, tmp_path: Path, redis_url: str) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("current_state: only\nstates:\n  - name: only\n")
    service = services.start(EXAMPLE, other, redis_url=redis_url)
    ambiguous = cli(service, "gate", "only")
    assert ambiguous.returncode == 2 and "HTTP 400" in ambiguous.stderr
    assert cli(service, "gate", "only", "--chart", "other").returncode == 0
    assert cli(service, "gate", "green_state", "--chart", "states").returncode == 0


def test_help_names_the_exit_codes() -> None:
    for command in ("gate", "report"):
        done = subprocess.run(
            [sys.executable, "-m", "stateservice", command, "--help"],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        )
        assert done.returncode == 0
        assert "exit 0" in done.stdout.replace("\n", " ").lower()
