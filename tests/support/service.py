"""`python -m stateservice` as a real subprocess, for tests that go through the command line and HTTP.

`ServiceProcess` runs `serve --port 0` from the source tree (PYTHONPATH is the repository root), reads
its JSON log from stderr in a thread, learns the port from the `serving` event and waits for
`/healthz`. `run_cli` runs the other commands to completion. `Services` starts services and, at
teardown, kills whatever is still running: the services' process groups (workers included) and
any embedded redis-server left under the data dirs it was told about.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


class ServiceFailed(AssertionError):
    """The service did not come up (or go down) as expected; the message carries its stderr."""


def service_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a stateservice subprocess: the source tree, JSON logs, no inherited settings."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("STATESERVICE_")}
    env["PYTHONPATH"] = str(REPO)
    env["STATESERVICE_LOG_FORMAT"] = "json"
    env.update(extra or {})
    return env


def run_cli(
    *args: str | Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m stateservice ARGS` to completion (stdin not a terminal); kill its group on timeout."""
    argv = [sys.executable, "-m", "stateservice", *map(str, args)]
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=service_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid)
        out, err = proc.communicate()
        raise ServiceFailed(f"{argv} still running after {timeout}s\nstdout:\n{out}\nstderr:\n{err}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def http(method: str, url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], str]:
    """One request with urllib: (status, headers, body text); error statuses are returned, not raised."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read().decode()


class ServiceProcess:
    """One `stateservice serve` subprocess: start, url, stderr lines and events, stop, kill."""

    def __init__(
        self,
        *charts: str | Path,
        cwd: Path,
        redis_url: str | None = None,
        data_dir: Path | None = None,
        workers: int = 1,
        args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.cwd = cwd
        self.workers = workers
        self.argv = [sys.executable, "-m", "stateservice", "serve", "--port", "0"]
        for chart in charts:
            self.argv += ["--chart", str(chart)]
        if redis_url is not None:
            self.argv += ["--redis", redis_url]
        if data_dir is not None:
            self.argv += ["--data-dir", str(data_dir)]
        if workers != 1:
            self.argv += ["--workers", str(workers)]
        self.argv += list(args)
        self.env = service_env(env)
        if env is None or "TMPDIR" not in env:
            self.env["TMPDIR"] = str(cwd)  # its metrics dir, left behind when a test kills it, goes with the test's
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._url: str | None = None

    # -- life ----------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> ServiceProcess:
        """Start, wait for the `serving` event, every worker's `worker_started` and /healthz 200."""
        self._proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: kill() takes the workers too
        )
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        try:
            serving = self.wait_for("serving", deadline=deadline)
            self._url = serving["url"]
            self.wait_for("worker_started", count=self.workers, deadline=deadline)
            while True:
                with contextlib.suppress(OSError):
                    if http("GET", f"{self.url}/healthz", timeout=2)[0] == 200:
                        break
                if time.monotonic() > deadline:
                    raise ServiceFailed(f"/healthz did not answer 200 within {timeout}s\n{self.stderr}")
                time.sleep(0.05)
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then the exit code; kills the group and fails if it has not exited within `timeout`."""
        proc = self._running()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServiceFailed(f"still running {timeout}s after SIGTERM\n{self.stderr}") from None
        self._join()
        return code

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash: the embedded redis-server, in its own session, survives)."""
        if self._proc is None:
            return
        _killpg(self._proc.pid)
        self._proc.wait()
        self._join()

    def wait(self, timeout: float = START_TIMEOUT) -> int:
        """The exit code of a service expected to end by itself (e.g. one that refuses to start)."""
        proc = self._running()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServiceFailed(f"still running after {timeout}s\n{self.stderr}") from None
        self._join()
        return code

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- what it says --------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the service has not logged its url yet")
        return self._url

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def stderr(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log events so far (those called `name`, if given); non-JSON lines are skipped."""
        with self._lock:
            lines = list(self.lines)
        found = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                found.append(event)
        return found

    def wait_for(
        self,
        name: str,
        *,
        count: int = 1,
        where: Callable[[dict[str, Any]], bool] = lambda _: True,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """The `count`-th event called `name` (matching `where`); fails if the process exits or time runs out."""
        deadline = deadline if deadline is not None else time.monotonic() + START_TIMEOUT
        while True:
            matches = [e for e in self.events(name) if where(e)]
            if len(matches) >= count:
                return matches[count - 1]
            if self._proc is not None and self._proc.poll() is not None:
                self._join()
                raise ServiceFailed(f"exited with status {self._proc.returncode} before {name!r}\n{self.stderr}")
            if time.monotonic() > deadline:
                raise ServiceFailed(f"no {count} {name!r} event(s) in time\n{self.stderr}")
            time.sleep(0.02)

    # -- plumbing ------------------------------------------------------------------------

    def _running(self) -> subprocess.Popen[str]:
        if self._proc is None:
            raise RuntimeError("the service was never started")
        return self._proc

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
        proc.stderr.close()

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(5)


class Services:
    """Starts services; `cleanup()` kills every one still running and any redis-server under `dirs`."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.started: list[ServiceProcess] = []
        self.dirs: list[Path] = []

    def make(self, *charts: str | Path, **options: Any) -> ServiceProcess:
        """A ServiceProcess not yet started (for one expected to refuse to start: `.start` or `.wait`)."""
        service = ServiceProcess(*charts, cwd=self.cwd, **options)
        self.started.append(service)
        if options.get("data_dir") is not None:
            self.watch(options["data_dir"])
        return service

    def start(self, *charts: str | Path, **options: Any) -> ServiceProcess:
        return self.make(*charts, **options).start()

    def watch(self, directory: Path) -> None:
        """Kill any redis-server serving a socket under `directory` at cleanup."""
        self.dirs.append(Path(directory).absolute())

    def cleanup(self) -> None:
        for service in self.started:
            service.kill()
        for directory in self.dirs:
            kill_redis_under(directory)


def redis_servers_under(directory: Path) -> list[int]:
    """Pids of live redis-server processes whose title names a path under `directory`."""
    needle = str(Path(directory).absolute()).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"redis-server" in cmdline and needle in cmdline and alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def kill_redis_under(directory: Path) -> None:
    for pid in redis_servers_under(directory):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)


def alive(pid: int) -> bool:
    """True if `pid` runs (a zombie has exited: it only waits for its parent)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition` until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
