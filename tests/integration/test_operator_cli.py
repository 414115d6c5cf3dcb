"""`stateservice halt|resume|advance|forget|release` against a live service, and what `gate` says of a halt."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.service import ServiceProcess, Services, http, run_cli

CHART = """\
name: roll
current_state: canary
states:
  - name: canary
    func: increment
    current: {key: hosts, value: 0}
    target: {name: done, when: {key: hosts, value: 3}}
    concurrency: 2
  - name: done
"""


@pytest.fixture
def service(services: Services, redis_url: str, tmp_path: Path) -> ServiceProcess:
    path = tmp_path / "roll.yaml"
    path.write_text(CHART)
    return services.start(path, redis_url=redis_url)


def cli(service: ServiceProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=service.cwd, env={"STATESERVICE_URL": service.url})


def last(service: ServiceProcess) -> dict[str, str]:
    record: dict[str, str] = json.loads(http("GET", f"{service.url}/charts/roll/history?limit=1")[2])["history"][0]
    return record


def test_halt_and_resume(service: ServiceProcess) -> None:
    halted = cli(service, "halt", "roll", "--reason", "error rate")
    assert (halted.returncode, halted.stdout.strip()) == (0, "chart 'roll' halted in 'canary': error rate")
    gate = cli(service, "gate", "canary")
    assert gate.returncode == 2 and "HTTP 409" in gate.stderr and "error rate" in gate.stderr
    assert "stateservice resume roll" in gate.stderr  # the message says how to go on
    assert cli(service, "resume", "roll").stdout.strip() == "chart 'roll' resumed"
    assert cli(service, "resume", "roll").stdout.strip() == "chart 'roll' was not halted"
    assert cli(service, "gate", "canary").returncode == 0


def test_advance_forget_and_release(service: ServiceProcess) -> None:
    http("PUT", f"{service.url}/state?state=canary&host=web1")
    assert cli(service, "forget", "roll", "web1").stdout.strip() == "forgot report of web1 in 'canary'"
    assert cli(service, "forget", "roll", "web1").stdout.strip() == "forgot nothing of web1 in 'canary'"
    http("PUT", f"{service.url}/slots/web2?state=canary")
    assert cli(service, "release", "roll", "web2", "--state", "canary").stdout.strip() == (
        "released web2's slot in 'canary'"
    )
    assert cli(service, "release", "roll", "web2", "--state", "canary").stdout.strip() == "web2 held no slot"
    moved = cli(service, "advance", "roll", "--reason", "looks good")
    assert moved.stdout.strip() == "chart 'roll' advanced: canary -> done"
    assert (last(service)["cause"], last(service)["reason"]) == ("operator", "looks good")
    final = cli(service, "advance", "roll")
    assert final.returncode == 2 and "HTTP 409" in final.stderr and "final" in final.stderr


def test_mistakes_and_an_unknown_chart(service: ServiceProcess) -> None:
    unknown = cli(service, "halt", "nope")
    assert unknown.returncode == 2 and "HTTP 404: no chart named 'nope'" in unknown.stderr
    assert cli(service, "release", "roll", "web1").returncode == 64  # --state is required
    bad = run_cli("resume", "roll", "--url", "localhost:1", cwd=service.cwd)
    assert bad.returncode == 64 and "write it as http://localhost:1" in bad.stderr
