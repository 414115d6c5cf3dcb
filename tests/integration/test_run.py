"""`stateservice run`: wait for the gate and a slot, run the command holding it, report, exit with its code."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.support.service import ServiceProcess, Services, http, run_cli, service_env

CHART = """\
name: roll
current_state: canary
states:
  - name: canary
    func: increment
    current: {{key: hosts, value: 0}}
    target: {{name: done, when: {{key: hosts, value: {target}}}}}
    concurrency: 1
    slot_ttl: {ttl}
    max_failures: 5
  - name: done
"""


def start(services: Services, redis_url: str, tmp_path: Path, target: int = 3, ttl: str = "10m") -> ServiceProcess:
    path = tmp_path / "roll.yaml"
    path.write_text(CHART.format(target=target, ttl=ttl))
    return services.start(path, redis_url=redis_url)


def run(service: ServiceProcess, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_cli("run", *args, cwd=service.cwd, env={"STATESERVICE_URL": service.url}, timeout=timeout)


def history(service: ServiceProcess) -> list[dict[str, str]]:
    records: list[dict[str, str]] = json.loads(http("GET", f"{service.url}/charts/roll/history")[2])["history"]
    return records


def detail(service: ServiceProcess) -> dict[str, object]:
    found: dict[str, object] = json.loads(http("GET", f"{service.url}/charts/roll")[2])
    return found


def test_a_command_that_succeeds_is_reported_done(services: Services, redis_url: str, tmp_path: Path) -> None:
    service = start(services, redis_url, tmp_path)
    marker = tmp_path / "ran"
    done = run(service, "canary", "--host", "web1", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    assert done.returncode == 0, done.stderr
    assert marker.exists()
    view = detail(service)
    assert view["hosts_counted"] == ["web1"] and view["slots_held"] == []


def test_a_failing_command_is_reported_failed_and_its_code_kept(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    service = start(services, redis_url, tmp_path)
    done = run(service, "canary", "--host", "web1", "--", "sh", "-c", "exit 3")
    assert done.returncode == 3
    failures = detail(service)["failures"]
    assert [(f["host"], f["reason"]) for f in failures] == [("web1", "exit 3")]  # type: ignore[attr-defined]
    missing = run(service, "canary", "--host", "web2", "--", str(tmp_path / "no-such-program"))
    assert missing.returncode == 127 and "cannot run" in missing.stderr


def test_it_gives_up_with_75_when_the_state_does_not_come(services: Services, redis_url: str, tmp_path: Path) -> None:
    service = start(services, redis_url, tmp_path)
    started = time.monotonic()
    gave_up = run(service, "done", "--host", "web1", "--wait", "1.5", "--", "true")
    assert gave_up.returncode == 75, gave_up.stderr
    assert 1.4 < time.monotonic() - started < 20
    assert "did not become current" in gave_up.stderr


def test_one_slot_means_one_command_at_a_time(services: Services, redis_url: str, tmp_path: Path) -> None:
    """Three hosts run a command that logs its start and end; with concurrency 1 the spans never overlap."""
    service = start(services, redis_url, tmp_path, target=3)
    log = tmp_path / "spans"
    step = (
        f"import time; f = open({str(log)!r}, 'a'); f.write(f'start {{time.time()}}\\n'); f.flush(); "
        "time.sleep(0.8); f.write(f'end {time.time()}\\n')"
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stateservice",
                "run",
                "canary",
                "--host",
                f"web{n}",
                "--",
                sys.executable,
                "-c",
                step,
            ],
            cwd=service.cwd,
            env=service_env({"STATESERVICE_URL": service.url}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    events = [line.split() for line in log.read_text().splitlines()]
    assert [kind for kind, _ in events] == ["start", "end"] * 3  # each span ends before the next starts
    assert detail(service)["current_state"] == "done"


def test_the_slot_is_renewed_while_a_long_command_runs(services: Services, redis_url: str, tmp_path: Path) -> None:
    service = start(services, redis_url, tmp_path, ttl="2s")
    done = run(service, "canary", "--host", "web1", "--", "sleep", "4")
    assert done.returncode == 0, done.stderr
    assert not [h for h in history(service) if h["cause"] == "slot_expired"]
    assert detail(service)["hosts_counted"] == ["web1"]


def test_a_halt_while_the_command_runs_is_said_and_the_command_goes_on(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    service = start(services, redis_url, tmp_path, ttl="3s")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stateservice", "run", "canary", "--host", "web1", "--", "sleep", "4"],
        cwd=service.cwd,
        env=service_env({"STATESERVICE_URL": service.url}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30  # a loaded machine may take seconds to start `run`: halt once it holds the slot
    while json.loads(http("GET", f"{service.url}/charts/roll/slots")[2])["held"] == 0:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    assert http("POST", f"{service.url}/charts/roll/halt?reason=stop")[0] == 200
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0  # the command's own code: it was not killed
    assert "halted" in err and "the command goes on" in err
    assert "the report was refused" in err
