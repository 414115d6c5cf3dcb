"""Many charts: `serve --charts DIR` with 10,000 chart files of three states each.

Writes the chart files into a temporary directory, starts `stateservice serve --charts DIR` (one
worker, the embedded Redis under the same directory) and reports:

- ready: seconds from starting the process to the first `/readyz` 200, and the CPU seconds the
  service spent by then (its own and its finished children's: the cost, whatever else the machine runs);
- `GET /charts`: the median (and range) of several full listings, and of a walk through every page
  of `limit=1000`;
- the worker's RSS once ready;
- SIGHUP reload: seconds from the signal to the `charts_reloaded` log line, after changing 100
  files, adding 10 and removing 10.

`--flags` gives the files as N `--chart` flags instead of `--charts DIR` (what 0.1 could do).

    .venv/bin/python bench/many_charts.py [--charts 10000] [--runs 5] [--flags]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _harness import rss_mb


def cpu_with_children(pid: int) -> float:
    """User + system CPU seconds of `pid` and of its children it has reaped, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")


CHART = """\
name: {name}
current_state: first
states:
  - name: first
    func: increment
    current: {{key: hosts, value: 0}}
    target: {{name: second, when: {{key: hosts, value: {target}}}}}
  - name: second
    func: increment
    current: {{key: hosts, value: 0}}
    target: {{name: done, when: {{key: hosts, value: 10}}}}
  - name: done
"""


def write_charts(directory: Path, count: int, target: int = 5, start: int = 0) -> list[Path]:
    """`count` chart files c00000.yaml... of three states each."""
    paths = []
    for number in range(start, start + count):
        path = directory / f"c{number:05d}.yaml"
        path.write_text(CHART.format(name=f"c{number:05d}", target=target))
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str) -> tuple[int, Any, float]:
    """Status, JSON body and seconds of one GET."""
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            body = answer.read()
            status = answer.status
    except urllib.error.HTTPError as exc:
        return exc.code, None, time.perf_counter() - began
    took = time.perf_counter() - began
    return status, json.loads(body), took


def wait_ready(base: str, proc: subprocess.Popen[bytes], began: float, timeout: float = 300.0) -> float:
    while time.perf_counter() - began < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}")
        try:
            if get(base + "/readyz")[0] == 200:
                return time.perf_counter() - began
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError("not ready in time")


def wait_event(log: Path, event: str, after: int, timeout: float = 300.0) -> float:
    """Seconds until a line with `event` appears in `log` past byte `after`."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        with log.open("rb") as handle:
            handle.seek(after)
            for line in handle:
                if f'"event": "{event}"'.encode() in line or f'"event":"{event}"'.encode() in line:
                    return time.perf_counter() - began
        time.sleep(0.01)
    raise RuntimeError(f"no {event} in time")


def listing(base: str, runs: int, count: int) -> dict[str, Any]:
    full = []
    for _ in range(runs):
        status, body, took = get(base + "/charts")
        assert status == 200 and len(body["charts"]) == count, (status, body and len(body["charts"]))
        full.append(took)
    paged = []
    for _ in range(runs):
        url, seen, total = base + "/charts?limit=1000", 0, 0.0
        while True:
            status, body, took = get(url)
            if status != 200:
                paged.append(float("nan"))  # no pagination (before it existed)
                break
            seen, total = seen + len(body["charts"]), total + took
            if not body.get("cursor"):
                assert seen == count, seen
                paged.append(total)
                break
            url = base + "/charts?limit=1000&cursor=" + body["cursor"]
    return {"full": full, "paged": paged}


def reload(proc: subprocess.Popen[bytes], log: Path, directory: Path, count: int, flags: bool) -> float:
    """Change 100 files (and, with a directory, add 10 and remove 10); seconds from SIGHUP to reloaded."""
    write_charts(directory, 100, target=7)
    if not flags:
        write_charts(directory, 10, start=count)
        for number in range(count - 10, count):
            (directory / f"c{number:05d}.yaml").unlink()
    after = log.stat().st_size
    began = time.perf_counter()
    proc.send_signal(signal.SIGHUP)
    wait_event(log, "charts_reloaded", after)
    return time.perf_counter() - began


def run(count: int, runs: int, flags: bool, keep: bool) -> dict[str, Any]:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="many-charts-") as tmp:
        root = Path(tmp)
        charts = root / "charts"
        charts.mkdir()
        paths = write_charts(charts, count)
        port = free_port()
        given = [arg for path in paths for arg in ("--chart", str(path))] if flags else ["--charts", str(charts)]
        argv = [sys.executable, "-m", "stateservice", "serve", *given, "--port", str(port)]
        argv += ["--data-dir", str(root / "data"), "--log-format", "json"]
        log = root / "serve.log"
        with log.open("wb") as out:
            began = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            try:
                base = f"http://127.0.0.1:{port}"
                ready = wait_ready(base, proc, began)
                ready_cpu = cpu_with_children(proc.pid)
                rss = rss_mb(proc.pid)
                lists = listing(base, runs, count)
                reloads = [reload(proc, log, charts, count, flags)]
                rss_after = rss_mb(proc.pid)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            if keep:
                print(log.read_text()[-4000:], file=sys.stderr)
    return {
        "charts": count,
        "given_as": "--chart flags" if flags else "--charts DIR",
        "load_average_at_start": load,
        "ready_s": round(ready, 2),
        "ready_cpu_s": round(ready_cpu, 2),
        "get_charts_s": [round(t, 3) for t in lists["full"]],
        "get_charts_median_s": round(statistics.median(lists["full"]), 3),
        "get_charts_paged_1000_s": [round(t, 3) for t in lists["paged"]],
        "worker_rss_mb": round(rss, 1),
        "worker_rss_after_reload_mb": round(rss_after, 1),
        "sighup_reload_s": [round(t, 2) for t in reloads],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charts", type=int, default=10_000, help="how many chart files")
    parser.add_argument("--runs", type=int, default=5, help="GET /charts repetitions")
    parser.add_argument("--flags", action="store_true", help="give the files as --chart flags, not --charts DIR")
    parser.add_argument("--log", action="store_true", help="print the end of the service's log")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    print(json.dumps(run(args.charts, args.runs, args.flags, args.log), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
