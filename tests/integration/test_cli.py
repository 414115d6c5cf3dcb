"""`python -m stateservice` as a subprocess: validate, serve (embedded Redis and --redis), status, reset, lifecycle."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from stateservice.store import keys
from tests.support.service import (
    REPO,
    ServiceProcess,
    Services,
    alive,
    http,
    kill_redis_under,
    redis_servers_under,
    run_cli,
    service_env,
    wait_until,
)

EXAMPLE = REPO / "examples" / "states.yaml"

GATE = textwrap.dedent(
    """\
    current_state: green_state
    states:
      - name: green_state
        func: increment
        current:
          key: count
          value: 0
        target:
          name: red_state
          when:
            key: count
            value: {green_target}
      - name: red_state
        func: increment
        current:
          key: count
          value: 0
        target:
          name: blue_state
          when:
            key: count
            value: 1
      - name: blue_state
    """
)

# the same chart without red_state: green moves straight to blue
WITHOUT_RED = textwrap.dedent(
    """\
    current_state: green_state
    states:
      - name: green_state
        func: increment
        current:
          key: count
          value: 0
        target:
          name: blue_state
          when:
            key: count
            value: 1
      - name: blue_state
    """
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory under /tmp with a short path: the embedded Redis's unix socket path must fit in 107 bytes."""
    directory = Path(tempfile.mkdtemp(dir="/tmp", prefix="ss-"))
    yield directory
    kill_redis_under(directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def data_dir(short_dir: Path) -> Path:
    return short_dir / "data"


@pytest.fixture
def services(services: Services, short_dir: Path) -> Services:
    """The shared fixture, also killing an embedded redis-server left under `short_dir`."""
    services.watch(short_dir)
    return services


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """A copy of the example chart, named `gate`, that a test may rewrite."""
    path = tmp_path / "gate.yaml"
    path.write_text(GATE.format(green_target=1))
    return path


def no_traceback(result: object) -> None:
    assert "Traceback" not in str(result)


def pid_of_embedded(data_dir: Path) -> int:
    return int((data_dir / "redis.pid").read_text())


def walk(service: ServiceProcess, *steps: tuple[str, str, int]) -> None:
    """Each (method, state, expected status) against /state, in order."""
    for method, state, expected in steps:
        status, _, body = http(method, f"{service.url}/state?state={state}")
        assert status == expected, (method, state, body)


def chart_view(service: ServiceProcess, chart: str) -> dict[str, Any]:
    status, _, body = http("GET", f"{service.url}/charts/{chart}")
    assert status == 200, body
    view: dict[str, Any] = json.loads(body)
    return view


def history(service: ServiceProcess, chart: str) -> list[dict[str, str | None]]:
    status, _, body = http("GET", f"{service.url}/charts/{chart}/history")
    assert status == 200, body
    records: list[dict[str, str | None]] = json.loads(body)["history"]
    return records


# -- validate ----------------------------------------------------------------------------------


def test_validate_the_example_exits_0(tmp_path: Path) -> None:
    result = run_cli("validate", EXAMPLE, cwd=tmp_path)

    assert result.returncode == 0, result
    assert result.stderr == ""
    assert "ok" in result.stdout


def test_validate_a_bad_file_prints_file_line_messages_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        GATE.format(green_target=1).replace("      name: blue_state", "      name: purple_state")
        + "  - name: red_state\n"
        + "colour: red\n"
    )

    result = run_cli("validate", bad, cwd=tmp_path)

    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) >= 3, result.stderr  # unknown target, duplicate state, unknown key: every problem, not the first
    for line in lines:
        assert re.fullmatch(rf"{re.escape(str(bad))}:\d+: \S.*", line), line
    assert any("purple_state" in line for line in lines)
    assert any(line.startswith(f"{bad}:24: ") and "red_state" in line for line in lines)  # at its 2nd occurrence
    assert any(line.startswith(f"{bad}:25: ") and "colour" in line for line in lines)
    no_traceback(result)


def test_validate_warnings_exit_0(tmp_path: Path) -> None:
    chart = tmp_path / "lonely.yaml"
    chart.write_text(GATE.format(green_target=1) + "  - name: orphan_state\n")

    result = run_cli("validate", chart, cwd=tmp_path)

    assert result.returncode == 0, result
    output = result.stdout + result.stderr
    assert re.search(rf"^{re.escape(str(chart))}:24: warning: .*orphan_state", output, re.MULTILINE), output


def test_validate_a_missing_file_exits_1_with_a_message(tmp_path: Path) -> None:
    result = run_cli("validate", tmp_path / "nowhere.yaml", cwd=tmp_path)

    assert result.returncode == 1
    assert f"{tmp_path / 'nowhere.yaml'}:1: " in result.stderr
    no_traceback(result)


def test_validate_reports_every_file(tmp_path: Path) -> None:
    result = run_cli("validate", EXAMPLE, tmp_path / "nowhere.yaml", cwd=tmp_path)

    assert result.returncode == 1
    assert "nowhere.yaml:1:" in result.stderr
    assert f"{EXAMPLE}: ok" in result.stdout


def test_validate_configuration_files(tmp_path: Path) -> None:
    good, bad = tmp_path / "orders.yaml", tmp_path / "bad.yaml"
    good.write_text("name: orders\nversion: v1\nstates: [new, paid]\nstarting_state: new\n")
    bad.write_text("name: orders\nversion: v2\nstates: [new]\nstarting_state: paid\n")

    result = run_cli("validate", "--configuration", good, "--configuration", bad, EXAMPLE, cwd=tmp_path)

    assert result.returncode == 1, result
    assert f"{good}: ok: configuration 'orders:v1', 2 states, 0 transitions, starts at 'new'" in result.stdout
    assert f"{EXAMPLE}: ok" in result.stdout
    assert result.stderr == f"{bad}:4: starting_state: 'paid' is not one of the states\n"
    no_traceback(result)


# -- arguments and settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["validate"], ["status"], ["reset"]], ids=lambda c: c[0] if c else ""
)
def test_help_exits_0(tmp_path: Path, command: list[str]) -> None:
    result = run_cli(*command, "--help", cwd=tmp_path)

    assert result.returncode == 0, result
    assert result.stdout.startswith("usage: ")


def test_a_bad_port_names_its_flag(tmp_path: Path) -> None:
    result = run_cli("serve", "--chart", EXAMPLE, "--port", "abc", cwd=tmp_path)

    assert result.returncode != 0
    assert "--port" in result.stderr and "'abc'" in result.stderr, result.stderr
    no_traceback(result)


@pytest.mark.parametrize(
    "command",
    [["serve", "--chart", str(EXAMPLE)], ["status"], ["reset", str(EXAMPLE), "--yes"]],
    ids=["serve", "status", "reset"],
)
def test_a_bad_redis_url_in_the_environment_names_the_variable(tmp_path: Path, command: list[str]) -> None:
    result = run_cli(*command, cwd=tmp_path, env={"STATESERVICE_REDIS_URL": "localhost"})

    assert result.returncode != 0
    assert "STATESERVICE_REDIS_URL" in result.stderr and "'localhost'" in result.stderr, result.stderr
    no_traceback(result)
    assert not (tmp_path / "stateservice-data").exists()


def test_serve_without_a_chart_says_so(tmp_path: Path) -> None:
    result = run_cli("serve", cwd=tmp_path)

    assert result.returncode != 0
    assert "--chart" in result.stderr
    no_traceback(result)


def test_serve_a_bad_chart_prints_its_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("states:\n  - name: a\n")

    result = run_cli("serve", "--chart", bad, "--port", "0", cwd=tmp_path)

    assert result.returncode != 0
    assert f"{bad}:1: " in result.stderr
    no_traceback(result)


# -- serve with the embedded Redis ----------------------------------------------------------------


def test_walkthrough_on_the_embedded_redis_then_sigterm(services: Services, data_dir: Path) -> None:
    service = services.start(EXAMPLE, data_dir=data_dir)
    redis_pid = pid_of_embedded(data_dir)
    assert redis_servers_under(data_dir) == [redis_pid]

    status, _, body = http("GET", f"{service.url}/state?state=green_state")
    assert (status, body.strip()) == (200, "green_state")
    status, _, body = http("GET", f"{service.url}/state?state=red_state")
    assert status == 406
    assert json.loads(body)["error"] == "not_current"
    assert json.loads(body)["current_state"] == "green_state"
    status, headers, body = http("PUT", f"{service.url}/state?state=green_state")
    assert (status, body.strip(), headers["Stateservice-Counted"]) == (200, "green_state", "true")
    walk(service, ("GET", "green_state", 406), ("GET", "red_state", 200), ("PUT", "red_state", 200))
    walk(service, ("GET", "blue_state", 200), ("PUT", "blue_state", 409), ("GET", "purple_state", 404))
    assert [(h["from"], h["to"], h["cause"]) for h in history(service, "states")] == [
        ("red_state", "blue_state", "put"),
        ("green_state", "red_state", "put"),
    ]

    assert service.stop() == 0

    assert not alive(redis_pid)
    assert redis_servers_under(data_dir) == []
    assert service.events("stopped")
    assert (data_dir / "appendonly.aof").exists() or (data_dir / "appendonlydir").is_dir()


@pytest.mark.slow
def test_restart_keeps_the_state_also_in_the_final_state(services: Services, data_dir: Path) -> None:
    first = services.start(EXAMPLE, data_dir=data_dir)
    walk(first, ("PUT", "green_state", 200))
    assert first.stop() == 0

    second = services.start(EXAMPLE, data_dir=data_dir)
    walk(second, ("GET", "red_state", 200), ("GET", "green_state", 406), ("PUT", "red_state", 200))
    assert second.stop() == 0

    final = services.start(EXAMPLE, data_dir=data_dir)
    walk(final, ("GET", "blue_state", 200), ("PUT", "blue_state", 409))
    assert json.loads(http("PUT", f"{final.url}/state?state=blue_state")[2])["error"] == "not_reportable"
    assert chart_view(final, "states")["final"] is True
    assert len(history(final, "states")) == 2
    assert final.stop() == 0
    assert redis_servers_under(data_dir) == []


@pytest.mark.slow
def test_status_starts_the_embedded_redis_and_stops_it_again(
    services: Services, data_dir: Path, tmp_path: Path
) -> None:
    service = services.start(EXAMPLE, data_dir=data_dir)
    walk(service, ("PUT", "green_state", 200))
    assert service.stop() == 0
    assert redis_servers_under(data_dir) == []

    text = run_cli("status", "--data-dir", data_dir, cwd=tmp_path)
    assert text.returncode == 0, text
    assert re.search(r"current_state\s+red_state", text.stdout), text.stdout
    assert "states" in text.stdout
    assert redis_servers_under(data_dir) == []

    as_json = run_cli("status", "states", "--json", "--data-dir", data_dir, cwd=tmp_path)
    assert as_json.returncode == 0, as_json
    view = json.loads(as_json.stdout)
    assert (view["name"], view["current_state"], view["final"]) == ("states", "red_state", False)
    assert {s["name"] for s in view["states"]} == {"green_state", "red_state", "blue_state"}
    assert view["entered_at"].endswith("Z")
    assert redis_servers_under(data_dir) == []

    unknown = run_cli("status", "nosuch", "--data-dir", data_dir, cwd=tmp_path)
    assert unknown.returncode != 0
    assert "nosuch" in unknown.stderr and "states" in unknown.stderr
    no_traceback(unknown)
    assert redis_servers_under(data_dir) == []


def test_reset_on_the_embedded_redis_of_a_running_service(services: Services, data_dir: Path, tmp_path: Path) -> None:
    service = services.start(EXAMPLE, data_dir=data_dir)
    redis_pid = pid_of_embedded(data_dir)
    walk(service, ("PUT", "green_state", 200), ("PUT", "red_state", 200))

    result = run_cli("reset", EXAMPLE, "--yes", "--data-dir", data_dir, cwd=tmp_path)

    assert result.returncode == 0, result
    assert "blue_state" in result.stdout and "green_state" in result.stdout
    assert redis_servers_under(data_dir) == [redis_pid]  # the service's Redis was reused, not stopped
    walk(service, ("GET", "green_state", 200), ("PUT", "green_state", 200), ("GET", "red_state", 200))
    newest = history(service, "states")
    assert [(h["from"], h["to"], h["cause"]) for h in newest[:2]] == [
        ("green_state", "red_state", "put"),
        ("blue_state", "green_state", "reset"),
    ]
    assert newest[1]["actor"].startswith("cli:")  # the audit trail says who reset it
    assert newest[1]["host"] == socket.gethostname()
    assert service.stop() == 0


def test_a_second_serve_on_the_same_data_dir_refuses(services: Services, data_dir: Path, tmp_path: Path) -> None:
    first = services.start(EXAMPLE, data_dir=data_dir)
    redis_pid = pid_of_embedded(data_dir)

    second = run_cli("serve", "--chart", EXAMPLE, "--port", "0", "--data-dir", data_dir, cwd=tmp_path)

    assert second.returncode != 0
    assert str(data_dir) in second.stderr and "in use" in second.stderr, second.stderr
    no_traceback(second)
    assert redis_servers_under(data_dir) == [redis_pid]
    walk(first, ("GET", "green_state", 200))
    assert first.stop() == 0


def test_after_a_crash_the_next_serve_reuses_the_embedded_redis(services: Services, data_dir: Path) -> None:
    crashed = services.start(EXAMPLE, data_dir=data_dir)
    walk(crashed, ("PUT", "green_state", 200))
    redis_pid = pid_of_embedded(data_dir)

    crashed.kill()

    assert alive(redis_pid)
    after = services.start(EXAMPLE, data_dir=data_dir)
    assert redis_servers_under(data_dir) == [redis_pid]
    assert after.events("embedded_redis_reused")
    walk(after, ("GET", "red_state", 200))
    assert after.stop() == 0
    assert not alive(redis_pid)
    assert redis_servers_under(data_dir) == []


# -- status and reset against a Redis given by URL -------------------------------------------------


def test_status_with_a_redis_url(services: Services, redis_url: str, gate: Path, tmp_path: Path) -> None:
    service = services.start(gate, redis_url=redis_url)
    walk(service, ("PUT", "green_state", 200))

    text = run_cli("status", "--redis", redis_url, cwd=tmp_path)
    as_json = run_cli("status", "gate", "--json", cwd=tmp_path, env={"STATESERVICE_REDIS_URL": redis_url})

    assert text.returncode == 0, text
    assert re.search(r"current_state\s+red_state", text.stdout), text.stdout
    assert re.search(r"entered_at\s+\d{4}-\d\d-\d\dT", text.stdout), text.stdout
    assert "count=1/1" in text.stdout and "count=0/1" in text.stdout  # the counters: green's last, red's
    assert str(gate) in text.stdout
    assert as_json.returncode == 0, as_json
    view = json.loads(as_json.stdout)
    assert (view["name"], view["current_state"]) == ("gate", "red_state")
    assert view["states"][0]["counter"] == {"key": "count", "value": 1}
    assert not (tmp_path / "stateservice-data").exists()  # no embedded Redis when a URL is given


def test_status_of_an_unreachable_redis_is_an_error(tmp_path: Path) -> None:
    from tests.support.redisproc import free_port

    result = run_cli("status", "--redis", f"redis://127.0.0.1:{free_port()}/0", cwd=tmp_path)

    assert result.returncode != 0
    assert "unreachable" in result.stderr
    no_traceback(result)


def test_reset_yes_puts_the_chart_back(services: Services, redis_url: str, gate: Path, tmp_path: Path) -> None:
    service = services.start(gate, redis_url=redis_url)
    walk(service, ("PUT", "green_state", 200), ("PUT", "red_state", 200), ("GET", "blue_state", 200))

    result = run_cli("reset", gate, "--yes", "--redis", redis_url, cwd=tmp_path)

    assert result.returncode == 0, result
    walk(service, ("GET", "green_state", 200), ("GET", "blue_state", 406))  # workers keep no copy of the state
    newest = history(service, "gate")[0]
    assert (newest["from"], newest["to"], newest["cause"]) == ("blue_state", "green_state", "reset")
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.hget("stateservice:{gate}", "current_state") == "green_state"


def test_reset_without_yes_and_no_terminal_exits_64(
    services: Services, redis_url: str, gate: Path, tmp_path: Path
) -> None:
    service = services.start(gate, redis_url=redis_url)
    walk(service, ("PUT", "green_state", 200))

    result = run_cli("reset", gate, "--redis", redis_url, cwd=tmp_path)

    assert result.returncode == 64, result  # a usage mistake (EX_USAGE): 2 means the service answered an error
    assert "--yes" in result.stderr
    no_traceback(result)
    walk(service, ("GET", "red_state", 200))
    assert all(h["cause"] != "reset" for h in history(service, "gate"))


# -- redeploys ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_chart_whose_current_state_was_removed_refuses_to_start(
    services: Services, redis_url: str, gate: Path, tmp_path: Path
) -> None:
    first = services.start(gate, redis_url=redis_url)
    walk(first, ("PUT", "green_state", 200))
    assert first.stop() == 0
    gate.write_text(WITHOUT_RED)

    refused = run_cli("serve", "--chart", gate, "--port", "0", "--redis", redis_url, cwd=tmp_path)

    assert refused.returncode != 0
    assert "stateservice reset" in refused.stderr and "red_state" in refused.stderr, refused.stderr
    no_traceback(refused)
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.hget("stateservice:{gate}", "current_state") == "red_state"  # kept for the operator
    assert run_cli("reset", gate, "--yes", "--redis", redis_url, cwd=tmp_path).returncode == 0
    after = services.start(gate, redis_url=redis_url)
    walk(after, ("GET", "green_state", 200), ("PUT", "green_state", 200), ("GET", "blue_state", 200))


def test_a_changed_chart_keeps_the_state_and_counter(
    services: Services, redis_url: str, gate: Path, tmp_path: Path
) -> None:
    gate.write_text(GATE.format(green_target=3))
    first = services.start(gate, redis_url=redis_url)
    walk(first, ("PUT", "green_state", 200))
    assert first.stop() == 0
    gate.write_text(GATE.format(green_target=2))

    second = services.start(gate, redis_url=redis_url, args=["--log-level", "info"])

    assert second.events("chart_definition_changed")
    assert chart_view(second, "gate")["states"][0]["counter"] == {"key": "count", "value": 1}
    walk(second, ("GET", "green_state", 200), ("PUT", "green_state", 200), ("GET", "red_state", 200))


def test_machine_is_an_alias_of_chart(services: Services, redis_url: str, gate: Path) -> None:
    service = services.start(redis_url=redis_url, args=["--machine", str(gate)])

    walk(service, ("GET", "green_state", 200))
    assert service.stop() == 0


# -- lifecycle ------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_signal_stops_the_workers_and_the_embedded_redis(
    services: Services, data_dir: Path, workers: int, signum: signal.Signals
) -> None:
    service = services.start(EXAMPLE, data_dir=data_dir, workers=workers)
    worker_pids = {e["pid"] for e in service.events("worker_started")}
    redis_pid = pid_of_embedded(data_dir)
    walk(service, ("GET", "green_state", 200))

    os.kill(service.pid, signum)

    assert service.wait() == 0, service.stderr
    assert not any(alive(pid) for pid in worker_pids)
    assert not alive(redis_pid)
    assert redis_servers_under(data_dir) == []


def test_a_port_in_use_is_refused_with_a_message(redis_url: str, gate: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_cli("serve", "--chart", gate, "--port", str(port), "--redis", redis_url, cwd=tmp_path)

    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr
    no_traceback(result)


def test_a_data_dir_too_long_for_a_socket_is_refused(tmp_path: Path) -> None:
    result = run_cli("serve", "--chart", EXAMPLE, "--port", "0", "--data-dir", tmp_path / ("d" * 110), cwd=tmp_path)

    assert result.returncode != 0
    assert "shorter --data-dir" in result.stderr, result.stderr
    no_traceback(result)


def test_an_interactive_reset_does_not_stop_the_redis_a_serve_took_over(
    services: Services, data_dir: Path, tmp_path: Path
) -> None:
    # `reset` (waiting at its prompt) starts the embedded Redis; `serve` starts meanwhile and reuses it
    controller, terminal = os.openpty()
    asking = subprocess.Popen(
        [sys.executable, "-m", "stateservice", "reset", str(EXAMPLE), "--data-dir", str(data_dir)],
        cwd=tmp_path,
        env=service_env(),
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    os.close(terminal)
    try:
        assert wait_until(lambda: bool(redis_servers_under(data_dir)) or asking.poll() is not None, 20)
        assert asking.poll() is None
        service = services.start(EXAMPLE, data_dir=data_dir)
        walk(service, ("PUT", "green_state", 200))

        os.write(controller, b"n\n")  # the operator says no: reset ends, and must leave the service's Redis alone
        out, err = asking.communicate(timeout=20)
    finally:
        os.close(controller)
        if asking.poll() is None:
            asking.kill()
            asking.communicate()

    assert asking.returncode == 1, (out, err)
    assert "not reset" in err
    walk(service, ("GET", "red_state", 200))  # the service still has its store
    assert len(redis_servers_under(data_dir)) == 1
    assert service.stop() == 0
    assert redis_servers_under(data_dir) == []


# -- status and reset through a running service, reset by name ------------------------------------


def test_status_through_a_service_needs_no_redis_here(
    services: Services, redis_url: str, gate: Path, tmp_path: Path
) -> None:
    service = services.start(gate, redis_url=redis_url)
    walk(service, ("PUT", "green_state", 200))
    env = {"STATESERVICE_REDIS_URL": "redis://127.0.0.1:9/0"}  # unreachable: --url must not touch it

    text = run_cli("status", "--url", service.url, cwd=tmp_path, env=env)
    as_json = run_cli("status", "gate", "--json", "--url", service.url, cwd=tmp_path, env=env)

    assert text.returncode == 0, text
    assert "chart gate" in text.stdout and "current_state  red_state" in text.stdout
    assert as_json.returncode == 0, as_json
    view = json.loads(as_json.stdout)
    assert (view["name"], view["current_state"]) == ("gate", "red_state")
    missing = run_cli("status", "nope", "--url", service.url, cwd=tmp_path)
    assert missing.returncode == 2 and "HTTP 404: no chart named 'nope'" in missing.stderr
    no_traceback(missing)


def test_reset_through_a_service_is_recorded_with_this_host(
    services: Services, redis_url: str, gate: Path, tmp_path: Path
) -> None:
    service = services.start(gate, redis_url=redis_url)
    walk(service, ("PUT", "green_state", 200), ("PUT", "red_state", 200))

    by_name = run_cli("reset", "gate", "--yes", "--url", service.url, cwd=tmp_path)

    assert by_name.returncode == 0, by_name
    assert by_name.stdout.strip() == "chart 'gate' reset: blue_state -> green_state"
    newest = history(service, "gate")[0]
    assert (newest["cause"], newest["host"]) == ("reset", socket.gethostname())
    walk(service, ("PUT", "green_state", 200))
    by_file = run_cli("reset", gate, "--yes", "--url", service.url, cwd=tmp_path)
    assert by_file.returncode == 0 and "red_state -> green_state" in by_file.stdout
    asking = run_cli("reset", "gate", "--url", service.url, cwd=tmp_path)  # no terminal: refused, nothing done
    assert asking.returncode == 64 and "--yes" in asking.stderr
    assert history(service, "gate")[0]["to"] == "green_state"


def test_reset_names_a_registered_chart_without_its_file(
    services: Services, redis_url: str, gate: Path, tmp_path: Path
) -> None:
    service = services.start(gate, redis_url=redis_url)
    walk(service, ("PUT", "green_state", 200))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    result = run_cli("reset", "gate", "--yes", "--redis", redis_url, cwd=elsewhere)

    assert result.returncode == 0, result
    assert result.stdout.strip() == "chart 'gate' reset: red_state -> green_state"
    unknown = run_cli("reset", "nope", "--yes", "--redis", redis_url, cwd=elsewhere)
    assert (
        unknown.returncode == 1
        and "no chart named 'nope' is registered in this Redis; registered: gate" in unknown.stderr
    )
    no_file = run_cli("reset", "missing.yaml", "--yes", "--redis", redis_url, cwd=elsewhere)
    assert no_file.returncode == 1 and "missing.yaml: no such chart file" in no_file.stderr
    no_traceback((unknown, no_file))


def test_status_refuses_a_data_dir_that_does_not_exist(tmp_path: Path) -> None:
    result = run_cli("status", "--data-dir", tmp_path / "typo", cwd=tmp_path)

    assert result.returncode == 1
    assert f"--data-dir {tmp_path / 'typo'} does not exist" in result.stderr
    assert not (tmp_path / "typo").exists()
    no_traceback(result)


def test_status_and_reset_refuse_a_url_without_a_scheme(tmp_path: Path) -> None:
    for command in (["status"], ["reset", "gate", "--yes"]):
        result = run_cli(*command, "--url", "localhost:5000", cwd=tmp_path)
        assert result.returncode == 64 and "write it as http://localhost:5000" in result.stderr


# -- status of configurations ------------------------------------------------------------------------

CONFIGURATION = """\
name: upgrade
version: v1
states: [drain, drained]
starting_state: drain
transitions:
  - {from: drain, to: drained, event: drained}
"""


def _instances(redis_url: str, *ids: str) -> None:
    with redis.Redis.from_url(redis_url, decode_responses=True) as plain:
        for n, instance in enumerate(ids):
            plain.hset(keys.instances(), instance, "upgrade:v1 " + ("drained" if n == 0 else "drain"))
        plain.hset(keys.instance_counts("upgrade:v1"), mapping={"drained": 1, "drain": len(ids) - 1})


def test_status_lists_configurations_with_their_counts_from_redis_and_through_a_service(
    services: Services, redis_url: str, gate: Path, tmp_path: Path
) -> None:
    conf = tmp_path / "upgrade.yaml"
    conf.write_text(CONFIGURATION)
    service = services.start(gate, redis_url=redis_url, args=["--configuration", str(conf)])
    _instances(redis_url, "a", "b", "c")  # counts as the service keeps them (its scripts are tested elsewhere)

    text = run_cli("status", "--redis", redis_url, cwd=tmp_path)
    one = run_cli("status", "upgrade:v1", "--json", "--redis", redis_url, cwd=tmp_path)
    remote = run_cli("status", "upgrade", "--url", service.url, cwd=tmp_path)
    missing = run_cli("status", "upgrade:v9", "--redis", redis_url, cwd=tmp_path)

    assert text.returncode == 0, text
    assert "chart gate" in text.stdout
    assert re.search(r"configuration upgrade:v1  \(3 instances\)\n\s+drain\s+2\n\s+drained\s+1", text.stdout), text
    assert json.loads(one.stdout) == {
        "configuration": "upgrade:v1",
        "instances": 3,
        "counts": {"drain": 2, "drained": 1},
    }
    assert remote.returncode == 0, remote
    assert "configuration upgrade:v1  (3 instances)" in remote.stdout and "chart gate" not in remote.stdout
    assert missing.returncode != 0 and "no configuration upgrade:v9" in missing.stderr
    no_traceback(missing)


def test_status_of_a_name_a_chart_and_a_configuration_share_shows_both(
    services: Services, redis_url: str, gate: Path, tmp_path: Path
) -> None:
    (tmp_path / "configurations").mkdir()  # not among the chart files
    conf = tmp_path / "configurations" / "gate.yaml"
    conf.write_text(CONFIGURATION.replace("name: upgrade", "name: gate"))
    other = tmp_path / "configurations" / "upgrade.yaml"
    other.write_text(CONFIGURATION)
    service = services.start(
        gate, redis_url=redis_url, args=["--configuration", str(conf), "--configuration", str(other)]
    )

    local = run_cli("status", "gate", "--redis", redis_url, cwd=tmp_path)
    remote = run_cli("status", "gate", "--url", service.url, cwd=tmp_path)
    alone = run_cli("status", "upgrade", "--url", service.url, cwd=tmp_path)
    neither = run_cli("status", "nothing", "--redis", redis_url, cwd=tmp_path)

    for both in (local, remote):
        assert both.returncode == 0, both
        assert "chart gate" in both.stdout and "configuration gate:v1  (0 instances)" in both.stdout, both
    assert alone.returncode == 0 and "chart" not in alone.stdout and "configuration upgrade:v1" in alone.stdout
    assert neither.returncode != 0 and "no chart named 'nothing'" in neither.stderr
    no_traceback(neither)
