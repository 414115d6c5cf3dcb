"""`python bench/choices.py`: the measurements behind docs/choices.md (hand-written or a library).

For each hand-written part where a number helps decide, our code and the library candidates run
the same work in the same process, interleaved round by round (A B C, then C B A, ...), so that
other load on the machine falls on all of them alike; a table shows each one's best round and the
range over the rounds.

1. Accept header: does the candidate pick what `web.predict.prefers_text` picks, and at what cost
2. durations: does the candidate accept, refuse and read what `core.timing.parse_duration` does
3. prediction pool: the worker's CPU per trivial job (what a job costs the gates), and wall time
4. log lines: CPU per request line and write() calls, lines written into a pipe
5. Redis Cluster: a chart transaction (WATCH/HGETALL/MULTI/HSET/EXEC) on a real 3-master cluster:
   time per transaction and the longest stall of the event loop meanwhile, 32 transactions at once,
   and 64 reads at once through 4 connections per node

Bounded: about a minute on a 2-CPU machine. The candidates are not dependencies of the service:
    .venv/bin/pip install python-mimeparse pytimeparse isodate
(Werkzeug comes with the test extra; loky is the copy vendored in joblib, a dependency.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import isodate  # noqa: E402 - the imports below need the repository root on sys.path
import mimeparse  # noqa: E402
import pytimeparse  # noqa: E402
import structlog  # noqa: E402
from joblib.externals import loky  # noqa: E402
from redis.asyncio.cluster import RedisCluster  # noqa: E402
from werkzeug.datastructures import MIMEAccept  # noqa: E402
from werkzeug.http import parse_accept_header  # noqa: E402

from stateservice.core.timing import parse_duration  # noqa: E402
from stateservice.models.pool import PredictPool  # noqa: E402
from stateservice.store.redis.connect import connect  # noqa: E402
from stateservice.telemetry import logs  # noqa: E402
from stateservice.telemetry.perprocess import NextTurn  # noqa: E402
from stateservice.web.predict import prefers_text  # noqa: E402
from tests.support.cluster import Cluster  # noqa: E402

ROUNDS = 3
Row = tuple[str, ...]


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    """The best (lowest) value, then the range over the rounds."""
    return f"{fmt.format(min(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def interleaved(runs: dict[str, Callable[[], float]], rounds: int = ROUNDS) -> dict[str, list[float]]:
    """Each run once per round, the order reversed every other round."""
    names = list(runs)
    results: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            results[name].append(runs[name]())
    return results


# -- 1. Accept ------------------------------------------------------------------------------------------------

# what clients send (curl, browsers, HTTP libraries) and the edge cases the tests of web/predict.py pin down
ACCEPT_HEADERS = [
    "",
    "*/*",
    "application/json",
    "text/plain",
    "text/plain, application/json",
    "application/json, text/plain",
    "text/plain;q=0.9, application/json;q=0.8",
    "application/json;q=0.5, text/plain",
    "text/*",
    "text/*;q=0.5, */*;q=0.1",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "TEXT/Plain",
    "text/plain; charset=utf-8",
    "text/plain;q=abc",
    "text/plain;q=2, application/json",
    "text/html",
    "application/*, text/plain;q=0.5",
]


def _ours(header: str) -> bool:
    return prefers_text(header)


def _mimeparse(header: str) -> bool:
    # best_match breaks a tie in favour of the later of `supported`: JSON last, so that a tie is JSON
    try:
        return mimeparse.best_match(["text/plain", "application/json"], header) == "text/plain"
    except ValueError:  # a header it cannot parse
        return False


def _werkzeug(header: str) -> bool:
    # best_match breaks a tie in favour of the earlier of the list: JSON first
    return parse_accept_header(header, MIMEAccept).best_match(["application/json", "text/plain"]) == "text/plain"


def accept() -> list[Row]:
    candidates = {"ours (web/predict.py)": _ours, "python-mimeparse 2": _mimeparse, "Werkzeug MIMEAccept": _werkzeug}
    truth = [_ours(h) for h in ACCEPT_HEADERS]

    def timed(fn: Callable[[str], bool]) -> Callable[[], float]:
        def run() -> float:
            loops = 2000
            seconds = timeit.timeit(lambda: [fn(h) for h in ACCEPT_HEADERS], number=loops)
            return seconds / loops / len(ACCEPT_HEADERS) * 1e6

        return run

    times = interleaved({name: timed(fn) for name, fn in candidates.items()})
    rows = []
    for name, fn in candidates.items():
        differ = [repr(h) for h, want in zip(ACCEPT_HEADERS, truth, strict=True) if fn(h) != want]
        rows.append(
            (
                name,
                f"{len(ACCEPT_HEADERS) - len(differ)}/{len(ACCEPT_HEADERS)}",
                spread(times[name], "{:.2f}"),
                ", ".join(differ) or "-",
            )
        )
    return rows


# -- 2. durations ---------------------------------------------------------------------------------------------

# the forms the docs promise, then what must be refused (zero, signs, spaces, units we do not have, ISO
# months and years, whose length depends on the date)
DURATIONS = [
    "90s",
    "10m",
    "2h",
    "1d",
    "1h30m",
    "1d2h3m4s",
    "PT10M",
    "P1DT2H",
    "PT1.5S",
    "P2D",
    "0s",
    "PT0S",
    "",
    "1.5h",
    "1 h",
    "-5m",
    "+5m",
    "1w",
    "1:30",
    "5",
    "P1M",
    "P1Y",
    "PT",
    "p1d",
    "365000d",
]


def _ours_duration(text: str) -> timedelta | None:
    try:
        return parse_duration(text)
    except ValueError:
        return None


def _pytimeparse(text: str) -> timedelta | None:
    seconds = pytimeparse.parse(text)
    return timedelta(seconds=seconds) if seconds is not None else None


def _isodate(text: str) -> timedelta | None:
    try:
        value = isodate.parse_duration(text)
    except (isodate.ISO8601Error, ValueError, OverflowError):
        return None
    return value if isinstance(value, timedelta) else None  # a Duration (months, years) is not a timedelta


def _both(text: str) -> timedelta | None:
    """pytimeparse for the short forms, isodate for ISO 8601: what replacing ours would take."""
    return _isodate(text) if text[:1] in ("P", "p") else _pytimeparse(text)


def durations() -> list[Row]:
    candidates = {
        "ours (core/timing.py)": _ours_duration,
        "pytimeparse 1.1": _pytimeparse,
        "isodate 0.7": _isodate,
        "pytimeparse + isodate": _both,
    }
    truth = [_ours_duration(t) for t in DURATIONS]

    def timed(fn: Callable[[str], timedelta | None]) -> Callable[[], float]:
        def run() -> float:
            loops = 1000
            seconds = timeit.timeit(lambda: [fn(t) for t in DURATIONS], number=loops)
            return seconds / loops / len(DURATIONS) * 1e6

        return run

    times = interleaved({name: timed(fn) for name, fn in candidates.items()})
    rows = []
    for name, fn in candidates.items():
        differ = []
        for text, want in zip(DURATIONS, truth, strict=True):
            got = fn(text)
            if got != want:
                shown = "refused" if got is None else f"{got.total_seconds():g}s"
                differ.append(f"{text!r}: {shown}")
        rows.append(
            (
                name,
                f"{len(DURATIONS) - len(differ)}/{len(DURATIONS)}",
                spread(times[name], "{:.2f}"),
                "; ".join(differ) or "-",
            )
        )
    return rows


# -- 3. prediction pool ---------------------------------------------------------------------------------------

JOBS = 2000


def _cpu() -> float:
    """This process's CPU seconds, all its threads (the pool processes are children: not counted)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _jobs(submit: Callable[[], Awaitable[Any]], in_flight: int) -> tuple[float, float]:
    """CPU and wall microseconds per job over JOBS trivial jobs, `in_flight` at a time."""
    cpu, wall = _cpu(), time.perf_counter()
    for _ in range(JOBS // in_flight):
        await asyncio.gather(*(submit() for _ in range(in_flight)))
    return (_cpu() - cpu) / JOBS * 1e6, (time.perf_counter() - wall) / JOBS * 1e6


def pool() -> list[Row]:
    spawn = multiprocessing.get_context("spawn")
    rows = []

    async def measure() -> None:
        loop = asyncio.get_running_loop()
        ours = PredictPool(1)
        ours.start()
        executor = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn)
        reusable = loky.get_reusable_executor(max_workers=1)
        submit: dict[str, Callable[[], Awaitable[Any]]] = {
            # the pool's own job call (what load and predict go through), with a trivial job
            "ours (models/pool.py)": lambda: ours._call(abs, (-1,), 0),
            "concurrent.futures.ProcessPoolExecutor": lambda: loop.run_in_executor(executor, abs, -1),
            "loky 3 (joblib's)": lambda: loop.run_in_executor(reusable, abs, -1),
        }
        try:
            for fn in submit.values():  # started, and its first job done, before anything is timed
                await fn()
            for in_flight in (1, 8):
                cpu: dict[str, list[float]] = {name: [] for name in submit}
                wall: dict[str, list[float]] = {name: [] for name in submit}
                for index in range(ROUNDS):
                    for name in list(submit) if index % 2 == 0 else reversed(list(submit)):
                        c, w = await _jobs(submit[name], in_flight)
                        cpu[name].append(c)
                        wall[name].append(w)
                for name in submit:
                    rows.append((name, str(in_flight), spread(cpu[name], "{:.0f}"), spread(wall[name], "{:.0f}")))
        finally:
            await ours.close()
            executor.shutdown()
            reusable.shutdown()

    asyncio.run(measure())
    return rows


# -- 4. log lines ---------------------------------------------------------------------------------------------

LINES = 6000
EVENT = {"method": "GET", "path": "/state", "status": 200, "duration_ms": 0.41, "chart": "fleet", "host": "web-17"}


class _Counting:
    """A binary stream that counts its write() calls."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        written: int = self.stream.write(data)
        return written

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def _drain() -> Iterator[Any]:
    """A pipe like a worker's stderr, read to its end by another process."""
    with subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as reader:
        assert reader.stdin is not None
        try:
            yield reader.stdin
        finally:
            reader.stdin.close()


def _logger(sink: Any) -> Any:
    processors = [logs.merge, logs._Stamp(), logs._render_bytes]
    wrapper = structlog.make_filtering_bound_logger(20)  # INFO
    return structlog.wrap_logger(sink, processors=processors, wrapper_class=wrapper, cache_logger_on_first_use=True)


def _log_run(per_turn: int, line_logger: bool, stream: Any) -> tuple[float, int]:
    counting = _Counting(stream)
    sink: Any = (
        logs.LineLogger(NextTurn(functools.partial(logs._write_lines, counting)))
        if line_logger
        else structlog.BytesLogger(counting)
    )
    log = _logger(sink)

    async def requests() -> float:
        start = time.process_time()
        for _ in range(LINES // per_turn):
            for _ in range(per_turn):
                log.info("request", **EVENT)
            await asyncio.sleep(0)  # the loop's next turn
        await asyncio.sleep(0)
        return (time.process_time() - start) / LINES * 1e6

    cpu = asyncio.run(requests())
    return cpu, counting.writes


def log_lines() -> list[Row]:
    rows = []
    with _drain() as stream:
        for per_turn in (1, 20):
            runs = {
                "structlog.BytesLogger": functools.partial(_log_run, per_turn, False, stream),
                "ours (telemetry/logs.py LineLogger)": functools.partial(_log_run, per_turn, True, stream),
            }
            cpu: dict[str, list[float]] = {name: [] for name in runs}
            writes: dict[str, int] = {}
            for index in range(ROUNDS):
                for name in list(runs) if index % 2 == 0 else reversed(list(runs)):
                    c, writes[name] = runs[name]()
                    cpu[name].append(c)
            for name in runs:
                rows.append((name, str(per_turn), spread(cpu[name]), f"{writes[name]} for {LINES}"))
    return rows


# -- 5. Redis Cluster -----------------------------------------------------------------------------------------

TRANSACTIONS = 300


async def _transaction(client: Any, key: str) -> None:
    """One chart transaction's shape (store/charts.py): WATCH, read, MULTI, write, EXEC."""
    async with client.pipeline(transaction=True) as pipe:
        await pipe.watch(key)
        state = await pipe.hgetall(key)
        pipe.multi()
        pipe.hset(key, mapping={"count": int(state.get("count", 0)) + 1})
        await pipe.execute()


async def _stalls(work: Awaitable[Any]) -> float:
    """The longest the event loop went without running a 1 ms ticker while `work` ran, in ms."""
    longest = 0.0
    done = False

    async def ticker() -> None:
        nonlocal longest
        while not done:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            longest = max(longest, time.perf_counter() - before - 0.001)

    tick = asyncio.create_task(ticker())
    try:
        await work
    finally:
        done = True
        await tick
    return longest * 1000


async def _cluster_run(client: Any) -> tuple[float, float, float, str]:
    """ms per transaction back to back, the longest loop stall meanwhile (ms), ms for 32 transactions at once,
    and how 64 reads at once fared."""
    key = "stateservice:{bench-chart}"

    async def sequential() -> None:
        for _ in range(TRANSACTIONS):
            await _transaction(client, key)

    start = time.perf_counter()
    stall = await _stalls(sequential())
    per = (time.perf_counter() - start) / TRANSACTIONS * 1000
    # 32 charts' transactions at once, as under a fleet's reports
    start = time.perf_counter()
    await asyncio.gather(*(_transaction(client, f"stateservice:{{bench-{i}}}") for i in range(32)))
    together = (time.perf_counter() - start) * 1000
    # 64 reads at once, as gate GETs under load, through the 4 connections per node: they must wait, not fail
    outcomes = await asyncio.gather(
        *(client.hgetall(f"stateservice:{{bench-{i}}}") for i in range(64)), return_exceptions=True
    )
    failed = [type(o).__name__ for o in outcomes if isinstance(o, BaseException)]
    reads = f"{64 - len(failed)}/64 answered" + (f", {len(failed)} {failed[0]}" if failed else "")
    return per, stall, together, reads


def cluster() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="choices-", dir="/tmp") as tmp:
        for attempt in range(3):  # a free port can be taken before its node binds it (other tests on the machine)
            nodes = Cluster(Path(tmp) / str(attempt), masters=3)
            try:
                nodes.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        try:

            async def measure() -> list[Row]:
                clients = {
                    "ours (store/redis/cluster.py)": connect(nodes.url, cluster=True, max_connections=4),
                    "redis-py RedisCluster": RedisCluster.from_url(nodes.url, decode_responses=True, max_connections=4),
                }
                results: dict[str, list[tuple[float, float, float, str]]] = {name: [] for name in clients}
                try:
                    for index in range(ROUNDS):
                        for name in list(clients) if index % 2 == 0 else reversed(list(clients)):
                            results[name].append(await _cluster_run(clients[name]))
                finally:
                    for client in clients.values():
                        await client.aclose()
                return [
                    (
                        name,
                        spread([r[0] for r in runs], "{:.2f}"),
                        spread([r[1] for r in runs], "{:.1f}"),
                        spread([r[2] for r in runs], "{:.0f}"),
                        "; ".join(sorted({r[3] for r in runs})),
                    )
                    for name, runs in results.items()
                ]

            return asyncio.run(measure())
        finally:
            nodes.stop()


# -- the tables -----------------------------------------------------------------------------------------------


def table(title: str, header: Row, rows: list[Row]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    logs.configure("console", "warning")  # the pool's and the cluster client's info lines are not the output
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    print(
        f"bench/choices.py, {started:%Y-%m-%d %H:%M} UTC: {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; {ROUNDS} rounds each, interleaved: best round (range over rounds)\n"
    )
    print(table("1. Accept header", ("parser", "same choice as ours", "us per header", "differs on"), accept()))
    print(table("2. Durations", ("parser", "same answer as ours", "us per value", "differs on"), durations()))
    print(
        table(
            f"3. Prediction pool ({JOBS} trivial jobs)",
            ("pool", "jobs in flight", "worker CPU us per job", "wall us per job"),
            pool(),
        )
    )
    print(
        table(
            f"4. Log lines ({LINES} request lines into a pipe)",
            ("logger", "lines per loop turn", "CPU us per line", "write() calls"),
            log_lines(),
        )
    )
    print(
        table(
            f"5. Redis Cluster, 3 masters, 4 connections per node ({TRANSACTIONS} chart transactions back to back)",
            (
                "client",
                "ms per transaction",
                "longest loop stall, ms",
                "32 transactions at once, ms",
                "64 reads at once",
            ),
            cluster(),
        )
    )
    elapsed = (datetime.now(UTC) - started).total_seconds()
    print(f"{elapsed:.0f} s; load average {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
