"""`stateservice gate` and `stateservice report` against a live service: exit codes 0, 1, 2."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.service import REPO, ServiceProcess, Services, http, run_cli, service_env

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
    # the chart moved on: green is no longer current; web1's repeat is a safe retry, web2's is too late
    assert cli(service, "report", "green_state", "--host", "web1").returncode == 0
    assert cli(service, "report", "green_state", "--host", "web2").returncode == 1
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


def test_report_without_host_reports_the_machines_fqdn(service: ServiceProcess) -> None:
    assert cli(service, "report", "green_state").returncode == 0
    history = json.loads(http("GET", f"{service.url}/charts/states/history")[2])["history"]
    assert history[0]["host"] == socket.getfqdn()


def test_gate_waits_in_chunks_of_the_servers_lower_max_wait(services: Services, redis_url: str) -> None:
    """The client's 300 s chunk is over this server's --max-wait: its 400 names the limit, and the client adapts."""
    service = services.start(EXAMPLE, redis_url=redis_url, args=["--max-wait", "1"])
    started = time.monotonic()
    waited = cli(service, "gate", "red_state", "--wait", "2.5")
    assert waited.returncode == 1, waited.stderr  # not current after the whole wait: not an error
    assert 2.4 < time.monotonic() - started < 15
    polls = [e for e in service.events("request") if e.get("path") == "/state" and e.get("status") == 406]
    assert len(polls) >= 2  # several chunks of at most 1 s


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 (with Retry-After: 0) to the first `failures` requests, then 200."""

    failures = 2
    seen: list[float]

    def do_GET(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def _answer(self) -> None:
        self.seen.append(time.monotonic())
        busy = len(self.seen) <= self.failures
        body = b'{"error": "store_unavailable", "message": "Redis is unreachable; retry shortly", "status": 503}'
        self.send_response(503 if busy else 200)
        if busy:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(body) if busy else 0))
        self.end_headers()
        if busy:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[tuple[str, list[float]]]:
    seen: list[float] = []
    handler = type("Handler", (_Flaky,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("command", ["gate", "report"])
def test_503s_are_retried_with_a_growing_pause_until_answered(
    flaky: tuple[str, list[float]], tmp_path: Path, command: str
) -> None:
    url, seen = flaky
    done = run_cli(
        command,
        "canary",
        "--url",
        url,
        "--wait",
        "20",
        *(["--host", "web1"] if command == "report" else []),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert len(seen) == 3
    assert seen[2] - seen[1] > seen[1] - seen[0] > 0.3  # 0.5 s, then 1 s (each within 20% jitter)


def test_without_a_wait_a_503_is_an_error_at_once(flaky: tuple[str, list[float]], tmp_path: Path) -> None:
    url, seen = flaky
    done = run_cli("gate", "canary", "--url", url, cwd=tmp_path)
    assert done.returncode == 2 and "HTTP 503: Redis is unreachable; retry shortly" in done.stderr
    assert len(seen) == 1


def test_a_service_that_starts_late_is_waited_for(tmp_path: Path, services: Services, redis_url: str) -> None:
    with socket.socket() as probe:  # a free port, closed: connections to it are refused until the service binds it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    reporting = subprocess.Popen(
        [sys.executable, "-m", "stateservice", "report", "green_state", "--url", url, "--host", "web1", "--wait", "60"],
        cwd=tmp_path,
        env=service_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        assert reporting.poll() is None, reporting.communicate()  # still retrying the refused connection
        service = services.start(EXAMPLE, redis_url=redis_url, args=["--port", str(port)])
        assert reporting.wait(timeout=30) == 0, reporting.communicate()
    finally:
        if reporting.poll() is None:
            reporting.kill()
        reporting.communicate()
    assert http("GET", f"{service.url}/state?state=red_state")[0] == 200


def test_unreachable_after_the_deadline_says_why_in_words(tmp_path: Path) -> None:
    done = run_cli("report", "canary", "--url", "http://127.0.0.1:9", "--host", "h", "--wait", "1.2", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "cannot reach http://127.0.0.1:9: connection refused (is `stateservice serve` running?)"
    )
    assert "URLError" not in done.stderr and "Errno" not in done.stderr


class _Redirecting(BaseHTTPRequestHandler):
    """Answers every request with a redirect to `target`, and records the requests it gets."""

    target = ""
    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers.items()))
        self.send_response(302)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_redirect_is_not_followed_so_the_token_goes_nowhere_else(tmp_path: Path) -> None:
    first: list[dict[str, str]] = []
    elsewhere: list[dict[str, str]] = []
    other = ThreadingHTTPServer(("127.0.0.1", 0), type("Other", (_Redirecting,), {"seen": elsewhere}))
    target = f"http://127.0.0.1:{other.server_address[1]}/state"
    asked = ThreadingHTTPServer(("127.0.0.1", 0), type("Asked", (_Redirecting,), {"seen": first, "target": target}))
    for server in (other, asked):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{asked.server_address[1]}"
        done = run_cli("gate", "canary", "--url", url, cwd=tmp_path, env={"STATESERVICE_TOKEN": "sst_secret"})
        assert done.returncode == 2 and "HTTP 302" in done.stderr, done.stderr
        assert len(first) == 1 and first[0]["Authorization"] == "Bearer sst_secret"
        assert elsewhere == []  # never asked, so never given the token
    finally:
        for server in (other, asked):
            server.shutdown()
            server.server_close()


def test_approve_refuses_an_input_nested_too_deeply_as_a_usage_error(tmp_path: Path) -> None:
    deep = '{"x": ' + "[" * 5000 + "]" * 5000 + "}"
    done = run_cli("approve", "abcdefghijklmnopqrstuv", "--input", deep, "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert done.returncode == 64 and "nests too deeply" in done.stderr and "Traceback" not in done.stderr
