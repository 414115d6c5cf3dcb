"""The dashboard's pages with many charts: how long the server takes to answer them (issue #17: under 300 ms).

Serves N charts (three states each, every one registered, a tenth of them with a report counted)
in-process against a private redis-server, and times each page from request to the last byte, as
a browser would get it: the overview's first page, a later page, a filtered page, and a chart's
page. The median and range of several runs are printed.

    .venv/bin/python bench/dashboard.py [--charts 1000] [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import _harness as h
from aiohttp.test_utils import TestClient, TestServer

from stateservice.config import Config
from stateservice.dashboard import setup
from stateservice.web.app import Loaded, create_app
from tests.support.charts import wave

HTML = {"Accept": "text/html"}


async def measure(url: str, charts: int, runs: int) -> dict[str, list[float]]:
    loaded = [wave(3, f"chart-{i:05}") for i in range(charts)]
    app = create_app(Config(redis_url=url, timezone="UTC"), Loaded(loaded), scheduler=False)
    setup(app)
    pages = {
        "overview, page 1": "/",
        "overview, last page": f"/?page={max(1, charts // 100)}",
        "overview, filtered": "/?q=chart-0009",
        "chart page": "/dashboard/charts/chart-00042",
    }
    times: dict[str, list[float]] = {name: [] for name in pages}
    async with TestClient(TestServer(app)) as client:
        await client.get("/", headers=HTML)  # registers the first page's charts
        for i in range(0, charts, 10):
            await client.put(f"/charts/chart-{i:05}/state?state=canary&host=h")
        for _ in range(runs):
            for name, path in pages.items():
                started = time.perf_counter()
                answer = await client.get(path, headers=HTML)
                await answer.read()
                assert answer.status == 200, (path, answer.status)
                times[name].append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        server = h.RedisProcess(Path(work))
        server.start()
        try:
            times = asyncio.run(measure(server.url, args.charts, args.runs))
        finally:
            server.stop()
    print(f"{args.charts} charts, {args.runs} runs: ms from request to last byte (median, min-max)")
    for name, found in times.items():
        print(f"  {name:22} {statistics.median(found):7.1f}   {min(found):.1f}-{max(found):.1f}")


if __name__ == "__main__":
    main()
