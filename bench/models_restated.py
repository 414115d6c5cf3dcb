"""The models benchmark, restated (issue #18): POST /state against in-process `predict`, side by side.

For two models that `examples/models/train.py` makes, the example (`light`: 50 rounds of a
gradient-boosted ensemble) and `--heavy` (a 500-tree random forest), it starts one
`stateservice serve --workers C --predict-processes 1` (C = this machine's cores: C prediction
processes, the default of one per worker), one with `--workers 1`, and three minimal aiohttp servers
that load the model file on every request (pickle, joblib, skops: `bench_models.baseline_server`).
Every POST carries the same one row, `[[500, 0]]`. Each round measures, one after the other:

- in-process `predict` of that row in this process: the median time of one call;
- in-process `predict` calls per second across C processes, each calling it back to back;
- the gate `GET /state?state=green_state` alone (paced at `--get-rate`/s): p50, p99;
- POST /state from one client back to back: p50;
- POST /state throughput with `--clients` clients back to back (in another process), while the
  paced gate GET runs: POST/s, and the gate's p50 and p99 under that prediction load; the CPU
  seconds the service's workers, its prediction processes, its Redis and the load client spent;
- POST /state throughput of the 1-worker service and of each load-per-request server, with
  `--load-clients` clients each (the per-request-load ratios, no target).

Targets (ratios within a round; the best and the range over the rounds are printed):
1. POST p50 <= in-process predict p50 + 2x the gate GET p50 alone;
2. POST/s (C workers) >= 0.8x the in-process predict calls per second across C processes.
Where a target is missed, the CPU split says why: the throughput bound is predict's CPU over the
CPU the whole request costs on those C cores (worker, prediction process, Redis, client).

    .venv/bin/python bench/models_restated.py [--rounds 2] [--seconds 4] [--models light,heavy]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing
import os
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness as h
import bench_models as bm

ROW = [[500.0, 0.0]]
BODY = json.dumps({"name": "colors", "values": ROW}).encode()
MODELS = ("light", "heavy")
LOADS = ("pickle", "joblib", "skops")


def trainer() -> Any:
    spec = importlib.util.spec_from_file_location("train", bm.REPO / "examples" / "models" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare(root: Path, heavy: bool) -> dict[str, Path]:
    """The model as pickle (served, as config `colors`), joblib and skops; the conf dir; {format: path}."""
    train = trainer()
    model = train.train(heavy=heavy)
    team = root / "models" / train.TEAM
    skops_path, joblib_path = train.save(model, root / "models")
    pickled = team / "colors_v1.pkl"
    pickled.write_bytes(pickle.dumps(model))
    pickled.chmod(0o644)
    (root / "conf").mkdir()
    config = {"name": "colors", "team": train.TEAM, "model": pickled.name, "states": bm.STATES}
    (root / "conf" / "colors.json").write_text(json.dumps(config))
    return {"pickle": pickled, "joblib": joblib_path, "skops": skops_path}


# -- in-process predict ---------------------------------------------------------------------------


def predict_median_ms(model: Any, seconds: float = 1.5) -> float:
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 20:
        began = time.perf_counter()
        model.predict(ROW)
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def predict_loop(path: str, seconds: float, start: Any, done: Any) -> None:
    """In its own process: predict back to back for `seconds` once `start` is set; (count, CPU seconds) on `done`."""
    model = pickle.loads(Path(path).read_bytes())
    model.predict(ROW)
    start.wait()
    count, deadline, began = 0, time.perf_counter() + seconds, time.process_time()
    while time.perf_counter() < deadline:
        model.predict(ROW)
        count += 1
    done.put((count, time.process_time() - began))


def predict_rate(path: Path, processes: int, seconds: float) -> tuple[float, float]:
    """In-process predict calls per second, summed over `processes` processes calling it at once; CPU ms per call."""
    context = multiprocessing.get_context("spawn")
    start, done = context.Event(), context.Queue()
    procs = [context.Process(target=predict_loop, args=(str(path), seconds, start, done)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    time.sleep(1.5)  # every process has loaded the model and predicted once
    start.set()
    answers = [done.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join()
    total, cpu = sum(n for n, _ in answers), sum(c for _, c in answers)
    return total / seconds, cpu / total * 1000


# -- the service's processes ------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc's parent links)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        each = todo.pop()
        found.append(each)
        todo += parents.get(each, [])
    return found


def roles(pid: int, log: Path) -> dict[str, list[int]]:
    """The service's processes by role: its prediction processes (from its log), its redis-server, the rest."""
    predictors = {int(e["pid"]) for e in events(log, "predict_process_started")}
    found: dict[str, list[int]] = {"workers": [], "prediction processes": [], "redis-server": []}
    for each in tree(pid):
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{each}/comm").read_text().strip()
            role = "prediction processes" if each in predictors else "redis-server" if "redis" in name else "workers"
            found[role].append(each)
    return found


def events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
    return found


def cpu_of(groups: dict[str, list[int]]) -> dict[str, float]:
    seconds = {}
    for role, pids in groups.items():
        total = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                total += h.cpu_seconds(pid)
        seconds[role] = total
    return seconds


# -- one round ------------------------------------------------------------------------------------


def post_load(url: str, seconds: float, clients: int, done: Any) -> None:
    """In its own process: `clients` clients POST back to back; (ok, failed, CPU seconds of this process)."""
    began = time.process_time()
    ok, failed, _ = h.run_client(bm.closed_loop(url, BODY, seconds, clients))
    done.put((ok, failed, time.process_time() - began))


def gate(url: str, rate: float, seconds: float) -> tuple[float, float, int]:
    latencies, failed = h.run_client(bm.paced(f"{url}{bm.GATE}", rate, seconds))
    return bm.percentile(latencies, 0.5), bm.percentile(latencies, 0.99), failed


def under_load(
    service: tuple[str, Path, int], args: argparse.Namespace, seconds: float
) -> tuple[float, float, float, dict[str, float], int]:
    """POST/s from `args.clients` clients in another process, with the paced gate GET meanwhile; CPU by role."""
    url, log, pid = service
    context = multiprocessing.get_context("spawn")
    done = context.Queue()
    load = context.Process(target=post_load, args=(f"{url}/state", seconds + 1.0, args.clients, done))
    groups = roles(pid, log)
    before = cpu_of(groups)
    load.start()
    time.sleep(0.5)
    p50, p99, failed = gate(url, args.get_rate, seconds)
    ok, post_failed, client_cpu = done.get(timeout=120)
    load.join()
    used = {k: v - before[k] for k, v in cpu_of(groups).items()}
    used["load client"] = client_cpu
    used["posts"] = ok
    return ok / (seconds + 1.0), p50, p99, used, failed + post_failed


def one_round(model: str, paths: dict[str, Path], servers: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    seconds, cores = args.seconds, os.cpu_count() or 1
    loaded = pickle.loads(paths["pickle"].read_bytes())
    out: dict[str, Any] = {"model": model, "failed": 0}
    out["predict_ms"] = predict_median_ms(loaded)
    out["predict_rate"], out["predict_cpu_ms"] = predict_rate(paths["pickle"], cores, seconds)
    url = servers["many"][0]
    out["get_p50"], out["get_p99"], failed = gate(url, args.get_rate, seconds)
    out["failed"] += failed
    ok, failed, latencies = h.run_client(bm.closed_loop(f"{url}/state", BODY, seconds, 1))
    out["post_p50"], out["failed"] = bm.percentile(latencies, 0.5), out["failed"] + failed
    rate, p50, p99, cpu, failed = under_load(servers["many"], args, seconds)
    out |= {"post_rate": rate, "get_p50_loaded": p50, "get_p99_loaded": p99, "cpu": cpu}
    out["failed"] += failed
    for name, base in [("cached, 1 worker", servers["one"][0]), *servers["loads"].items()]:
        ok, failed, _ = h.run_client(bm.closed_loop(f"{base}/state", BODY, seconds, args.load_clients))
        out.setdefault("rates", {})[name] = ok / seconds
        out["failed"] += failed
    return out


# -- the run ------------------------------------------------------------------------------------


def start_servers(root: Path, paths: dict[str, Path], stack: contextlib.ExitStack) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    started = {}
    for key, workers in (("many", cores), ("one", 1)):
        argv = [sys.executable, "-m", "stateservice", "serve", "--port", "0", "--log-format", "json"]
        argv += ["--chart", "examples/states.yaml", "--data-dir", str(root / f"data-{key}")]
        argv += ["--config", str(root / "conf"), "--models", str(root / "models"), "--workers", str(workers)]
        argv += ["--predict-processes", "1"]
        log = root / f"service-{key}.log"
        started[key] = (log, stack.enter_context(bm.running(argv, log)))
    loads = {}
    for fmt in LOADS:
        proc = stack.enter_context(
            bm.running([sys.executable, bm.__file__, "--baseline-server", str(paths[fmt])], root / f"{fmt}.log")
        )
        assert proc.stdout is not None
        loads[f"{fmt} load per request"] = f"http://127.0.0.1:{int(proc.stdout.readline())}"
    servers: dict[str, Any] = {"loads": loads}
    for key, (log, proc) in started.items():
        servers[key] = (bm.service_url(log, proc), log, proc.pid)
    for base in (servers["many"][0], servers["one"][0], *loads.values()):  # warm: models loaded, connections made
        h.run_client(bm.closed_loop(f"{base}/state", BODY, 1.0, 2))
    return servers


def run_model(model: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(dir="/tmp", prefix=f"ssb-{model}-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        paths = prepare(root, heavy=model == "heavy")
        sizes = {fmt: path.stat().st_size for fmt, path in paths.items()}
        print(f"\n== {model}: files {sizes} ==", flush=True)
        servers = start_servers(root, paths, stack)
        rounds = []
        for number in range(args.rounds):
            result = one_round(model, paths, servers, args)
            result["sizes"] = sizes
            rounds.append(result)
            print(f"  round {number + 1}: {json.dumps(result, default=round)}", flush=True)
        return rounds


def judged(rounds: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per round: the two targets' ratios and the reported ones."""
    out: dict[str, list[float]] = {}
    for r in rounds:
        bound = r["predict_ms"] + 2 * r["get_p50"]
        out.setdefault("post_p50 / bound", []).append(r["post_p50"] / bound)
        out.setdefault("post/s / predict/s", []).append(r["post_rate"] / r["predict_rate"])
        for name, rate in r["rates"].items():
            if name != "cached, 1 worker":
                out.setdefault(f"cached 1 worker / {name}", []).append(r["rates"]["cached, 1 worker"] / rate)
        out.setdefault("gate p99 loaded / alone", []).append(r["get_p99_loaded"] / r["get_p99"])
        cpu, posts = r["cpu"], r["cpu"]["posts"]
        predict_cpu = posts * r["predict_cpu_ms"] / 1000  # what the same predictions cost in-process
        service = cpu["workers"] + cpu["prediction processes"] + cpu["redis-server"]
        out.setdefault("CPU-normalised post/s / predict/s (service CPU only)", []).append(predict_cpu / service)
        out.setdefault("bound: predict CPU / all CPU (client's too)", []).append(
            predict_cpu / (service + cpu["load client"])
        )
    return out


def per_post(r: dict[str, Any]) -> str:
    posts = max(r["cpu"]["posts"], 1)
    return ", ".join(f"{k} {v / posts * 1000:.2f}" for k, v in r["cpu"].items() if k != "posts")


def markdown(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    """The tables of one run, to paste into bench/RESULTS-models.md."""
    lines = []
    cores = os.cpu_count() or 1
    for model, rounds in results.items():
        lines += [f"### {model}: files {rounds[0]['sizes']} bytes", ""]
        lines += ["| measure | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " |"]
        lines += ["|---" * (len(rounds) + 1) + "|"]
        rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
            ("in-process predict, 1 row, median ms", lambda r: f"{r['predict_ms']:.2f}"),
            ("in-process predict, CPU ms per call (in the rate run)", lambda r: f"{r['predict_cpu_ms']:.2f}"),
            (f"in-process predict calls/s, {cores} processes", lambda r: f"{r['predict_rate']:,.0f}"),
            ("gate GET alone, p50 / p99 ms", lambda r: f"{r['get_p50']:.2f} / {r['get_p99']:.2f}"),
            ("POST /state, 1 client, p50 ms", lambda r: f"{r['post_p50']:.2f}"),
            ("target 1 bound: predict + 2x gate p50, ms", lambda r: f"{r['predict_ms'] + 2 * r['get_p50']:.2f}"),
            (f"POST/s, {cores} workers, {args.clients} clients", lambda r: f"{r['post_rate']:,.0f}"),
            (
                "gate GET under that load, p50 / p99 ms",
                lambda r: f"{r['get_p50_loaded']:.2f} / {r['get_p99_loaded']:.2f}",
            ),
            (
                "CPU s during that load",
                lambda r: ", ".join(f"{k} {v:.1f}" for k, v in r["cpu"].items() if k != "posts"),
            ),
            ("CPU ms per POST during that load (the gate GETs' included)", per_post),
            *[
                (f"POST/s, {name}, {args.load_clients} clients", lambda r, n=name: f"{r['rates'][n]:,.1f}")
                for name in rounds[0]["rates"]
            ],
            ("failed requests", lambda r: str(r["failed"])),
        ]
        lines += [f"| {label} | " + " | ".join(fn(r) for r in rounds) + " |" for label, fn in rows]
        lines += ["", "| ratio | best | range |", "|---|---|---|"]
        for name, values in judged(rounds).items():
            best = min(values) if name.startswith("post_p50") or name.startswith("gate") else max(values)
            lines.append(f"| {name} | {best:.2f} | {min(values):.2f}-{max(values):.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per model (default 2)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measurement (default 4)")
    parser.add_argument("--models", default=",".join(MODELS), help="light, heavy or both (default both)")
    parser.add_argument("--clients", type=int, default=16, help="POST clients of the throughput run (default 16)")
    parser.add_argument("--load-clients", type=int, default=4, help="POST clients per load-per-request server")
    parser.add_argument("--get-rate", type=float, default=100, help="gate GETs a second (default 100)")
    args = parser.parse_args()
    print(f"machine: {bm.machine()}\nload average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results = {model: run_model(model, args) for model in args.models.split(",")}
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(markdown(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
