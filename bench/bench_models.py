"""Benchmark of implicit charts (not a test): what the model cache buys, and what predictions cost the gates.

Measured in one run, on this machine, every connection to 127.0.0.1:

1. POST /state throughput of `stateservice serve` (each model loaded once per worker), twice:
   predicting in the worker's threads (`--predict-processes 0`) and in a pool process
   (`--predict-processes 1`, the default), against minimal aiohttp servers that do what the
   original StateService did: load the model file on every request, then predict, on the event
   loop; once with `pickle.load` (the original's loader), once with `joblib.load`, once with
   `skops.io.load` (the format the example config serves). Target: >= 20x.
2. GET /state (a gate check, through Redis) latency, p50 and p99, alone, while one client in
   another process sends POST /state back to back (a prediction always running), and while
   `--concurrency` clients saturate POST /state; for threads and for the pool. Target: p99
   within 1.5x of alone. As a control, the same with one client back to back on a model whose
   predict costs next to nothing (DummyClassifier): what POST /state costs the gates apart from
   the prediction itself.

Every server runs one worker and serves the docs' example model (docs/models.md) (examples/models/train.py,
`--rounds` boosting rounds; stateservice from its pickle). The load clients bound their
concurrency; the GET probe is paced (open loop) and runs apart from the POST load's process.
The two stateservice servers run side by side (the idle one costs next to nothing), so that
each round measures both under the same neighbours.

    .venv/bin/python bench/bench_models.py [--seconds 5] [--rounds 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import json
import multiprocessing
import os
import pickle
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
STATES = ["green", "red", "blue"]
BODY = json.dumps({"name": "colors", "values": [[500, 0]]}).encode()
DUMMY = json.dumps({"name": "dummy", "values": [[500, 0]]}).encode()  # a model whose predict costs next to nothing
GATE = "/state?state=green_state"
VARIANTS = {"threads": 0, "pool": 1}  # --predict-processes of each stateservice server
START_TIMEOUT = 60.0


# -- the servers ------------------------------------------------------------------------------------


def baseline_server(model_path: str) -> None:
    """The original's way, on aiohttp: every POST /state loads the model file, then predicts."""
    import joblib
    import skops.io

    def load(path: str) -> Any:
        if path.endswith(".skops"):
            return skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
        if path.endswith(".joblib"):
            return joblib.load(path)
        with open(path, "rb") as handle:
            return pickle.load(handle)

    async def post_state(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        model = load(model_path)
        return web.json_response({"state": [STATES[i] for i in model.predict(body["values"])]})

    app = web.Application()
    app.router.add_post("/state", post_state)
    sock = socket.create_server(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    web.run_app(app, sock=sock, access_log=None, print=None)


@contextlib.contextmanager
def running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=out, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def service_url(log: Path, proc: subprocess.Popen[bytes]) -> str:
    """The URL of the `serving` event in a JSON log."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "serving":
                    return str(event["url"])
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"the service did not start:\n{log.read_text(errors='replace')}")


# -- the load -------------------------------------------------------------------------------------


async def closed_loop(url: str, body: bytes | None, seconds: float, concurrency: int) -> tuple[int, int, list[float]]:
    """`concurrency` clients, each sending its next request as soon as it has an answer: (ok, failed, latencies)."""
    latencies: list[float] = []
    failed = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal failed
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                method = "POST" if body is not None else "GET"
                async with session.request(method, url, data=body) as resp:
                    await resp.read()
                    if resp.status != 200:
                        failed += 1
                        continue
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return len(latencies), failed, latencies


async def paced(url: str, rate: float, seconds: float, limit: int = 64) -> tuple[list[float], int]:
    """GET `url` `rate` times a second for `seconds` (open loop, at most `limit` in flight): latencies, failures."""
    latencies: list[float] = []
    failed = 0
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal failed
            started = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    failed += 1
                    return
            latencies.append(time.perf_counter() - started)

        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies, failed


def post_load(url: str, body: bytes, seconds: float, clients: int, done: Any) -> None:
    """In its own process: `clients` closed-loop clients POST `body` for `seconds`; (ok, failed) on `done`."""
    ok, failed, _ = asyncio.run(closed_loop(url, body, seconds, clients))
    done.put((ok, failed))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


# -- the run --------------------------------------------------------------------------------------


def prepare(root: Path, rounds: int) -> list[Path]:
    """Train the example model, save it in a models dir as pickle, joblib and skops, configure the pickle."""
    spec = importlib.util.spec_from_file_location("train", REPO / "examples" / "models" / "train.py")
    assert spec is not None and spec.loader is not None
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    model = train.train(rounds=rounds)
    team = root / "models" / "state_service"
    team.mkdir(parents=True)
    for directory in (root / "models", team):
        directory.chmod(0o755)
    path = team / "colors_v1.pkl"
    path.write_bytes(pickle.dumps(model))
    paths = [path, *train.save(model, root / "models")]
    for each in paths:
        each.chmod(0o644)
    from sklearn.dummy import DummyClassifier

    dummy = team / "dummy.pkl"
    dummy.write_bytes(pickle.dumps(DummyClassifier(strategy="constant", constant=0).fit([[0, 0]], [0])))
    dummy.chmod(0o644)
    (root / "conf").mkdir()
    for name, file in (("colors", path), ("dummy", dummy)):
        config = {"name": name, "team": "state_service", "model": file.name, "states": STATES}
        (root / "conf" / f"{name}.json").write_text(json.dumps(config))
    return paths


def load_costs(path: Path) -> dict[str, float]:
    """Milliseconds per load of the model in each format, and per single-row predict, measured in this process."""
    import joblib
    import skops.io

    model = pickle.loads(path.read_bytes())
    joblib_bytes = io.BytesIO()
    joblib.dump(model, joblib_bytes)
    skops_bytes = skops.io.dumps(model)
    trusted = skops.io.get_untrusted_types(data=skops_bytes)

    def each(fn: Any, seconds: float = 1.0) -> float:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            count += 1
        return (time.perf_counter() - start) / count * 1000

    return {
        "pickle.load": each(lambda: pickle.loads(path.read_bytes())),
        "joblib.load": each(lambda: joblib.load(io.BytesIO(joblib_bytes.getvalue()))),
        "skops.io.load": each(lambda: skops.io.loads(skops_bytes, trusted=trusted), 2.0),
        "predict (1 row)": each(lambda: model.predict([[500, 0]])),
    }


def machine() -> str:
    import numpy
    import sklearn
    import skops

    versions = f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, scikit-learn {sklearn.__version__}"
    versions += f", numpy {numpy.__version__}, skops {skops.__version__}"
    return f"{platform.platform()}; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); {versions}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=50, help="boosting rounds of the example model (default 50)")
    parser.add_argument("--concurrency", type=int, default=8, help="POST clients in the throughput runs (default 8)")
    parser.add_argument("--get-rate", type=float, default=100, help="GET probes a second (default 100)")
    parser.add_argument("--get-rounds", type=int, default=3, help="rounds of the GET latency runs (default 3)")
    parser.add_argument("--baseline-server", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        return baseline_server(args.baseline_server)

    print(f"machine: {machine()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="ssb-") as tmp:
        root = Path(tmp)
        paths = prepare(root, args.rounds)
        path = paths[0]
        costs = load_costs(path)
        print(f"example model: {args.rounds} rounds, pickle {path.stat().st_size} bytes; ms each, in-process:")
        for what, ms in costs.items():
            print(f"  {what:16} {ms:8.2f} ms")
        with contextlib.ExitStack() as stack:
            ours = {}
            for variant, processes in VARIANTS.items():
                service = [sys.executable, "-m", "stateservice", "serve", "--port", "0", "--log-format", "json"]
                service += ["--chart", "examples/states.yaml", "--data-dir", str(root / f"data-{variant}")]
                service += ["--config", str(root / "conf"), "--models", str(root / "models")]
                service += ["--predict-processes", str(processes)]
                log = root / f"service-{variant}.log"
                ours[variant] = (log, stack.enter_context(running(service, log)))
            originals = {}
            for each in paths:
                theirs = stack.enter_context(
                    running([sys.executable, __file__, "--baseline-server", str(each)], root / f"{each.name}.log")
                )
                assert theirs.stdout is not None
                originals[each.suffix.lstrip(".")] = f"http://127.0.0.1:{int(theirs.stdout.readline())}"
            urls = {variant: service_url(log, proc) for variant, (log, proc) in ours.items()}
            for base in (*urls.values(), *originals.values()):  # warm: the model loaded, connections made
                asyncio.run(closed_loop(f"{base}/state", BODY, 1.0, 2))
                asyncio.run(closed_loop(f"{base}/state", DUMMY, 0.2, 1))
            report(args, urls, originals)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def report(args: argparse.Namespace, urls: dict[str, str], originals: dict[str, str]) -> None:
    seconds, concurrency = args.seconds, args.concurrency
    print(f"\nPOST /state throughput, {concurrency} concurrent clients, {seconds:g}s each:")
    rates = {}
    servers = {f"cached, {variant}": url for variant, url in urls.items()}
    servers |= {f"{fmt} load per request": base for fmt, base in originals.items()}
    for name, base in servers.items():
        ok, failed, latencies = asyncio.run(closed_loop(f"{base}/state", BODY, seconds, concurrency))
        rates[name] = ok / seconds
        print(
            f"  {name:28} {ok / seconds:8.1f} req/s  p50 {percentile(latencies, 0.5):7.2f} ms"
            f"  p99 {percentile(latencies, 0.99):7.2f} ms  failed {failed}"
        )
    cached = {variant: rates.pop(f"cached, {variant}") for variant in urls}
    for variant, rate_cached in cached.items():
        for name, rate in rates.items():
            print(f"  cached, {variant} / {name}: {rate_cached / rate:.1f}x (target >= 20x)")

    rounds = args.get_rounds
    print(
        f"\nGET {GATE} latency, paced at {args.get_rate:g}/s; {rounds} rounds of {seconds:g}s alone, then "
        "under each POST load (rounds interleaved, so that a noisy neighbour hits every case alike):"
    )
    loads = {}
    for variant, url in urls.items():
        loads |= {
            f"{variant}: alone": (url, BODY, 0),
            f"{variant}: 1 POST client (back to back)": (url, BODY, 1),
            f"{variant}: {concurrency} POST clients (saturating)": (url, BODY, concurrency),
            f"{variant}: control, 1 POST client, Dummy": (url, DUMMY, 1),
        }
    results: dict[str, list[float]] = {label: [] for label in loads}
    posted: dict[str, int] = dict.fromkeys(loads, 0)
    failures = 0
    context = multiprocessing.get_context("spawn")
    for _ in range(rounds):
        for label, (url, body, clients) in loads.items():
            done = context.Queue()
            load = None
            if clients:
                load = context.Process(target=post_load, args=(f"{url}/state", body, seconds + 1.0, clients, done))
                load.start()
                time.sleep(0.5)
            latencies, failed = asyncio.run(paced(f"{url}{GATE}", args.get_rate, seconds))
            results[label] += latencies
            failures += failed
            if load is not None:
                count, failed = done.get(timeout=60)
                load.join()
                posted[label] += count
                failures += failed
    for label, latencies in results.items():
        rate = f", {posted[label] / (rounds * (seconds + 1.0)):.0f} POST/s" if posted[label] else ""
        line(f"{label}{rate}", latencies)
    alone = {variant: percentile(results.pop(f"{variant}: alone"), 0.99) for variant in urls}
    for label, latencies in results.items():
        variant, _, load = label.partition(": ")
        ratio = percentile(latencies, 0.99) / alone[variant]
        print(f"  {variant}: p99 with {load} / alone: {ratio:.2f}x (target <= 1.5x)")
    print(f"  failed requests: {failures}")


def line(label: str, latencies: list[float]) -> None:
    print(
        f"  {label:58} p50 {percentile(latencies, 0.5):6.2f} ms  p99 {percentile(latencies, 0.99):6.2f} ms"
        f"  max {max(latencies) * 1000:7.2f} ms  n={len(latencies)}"
    )


if __name__ == "__main__":
    main()
