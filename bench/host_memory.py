"""What a counted host costs in Redis: the bytes one member of a chart's hosts set takes.

A report adds the host to `stateservice:{CHART}:hosts:STATE` (store/keys.py) until the chart
leaves the state. This fills a private redis-server with 100,000 hosts, as 100 sets of 1,000
short names (`h0`..`h99999`, the names of bench/cluster_wave.py) and as 10 sets of 10,000
FQDN-like names (`host-001-000123.fleet.example.com`), and prints INFO's `used_memory` growth
per host for each.

    .venv/bin/python bench/host_memory.py
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import _harness as h
import redis

HOSTS = 100_000


def grow(client: redis.Redis, fill: Callable[[redis.Redis], None]) -> float:
    """Bytes of `used_memory` per host that `fill` adds to an empty Redis."""
    client.flushall()
    before = int(client.info("memory")["used_memory"])
    fill(client)
    return (int(client.info("memory")["used_memory"]) - before) / HOSTS


def short_names(client: redis.Redis) -> None:
    for chart in range(100):
        client.sadd(f"stateservice:{{w{chart:03d}}}:hosts:wave", *[f"h{i}" for i in range(chart, HOSTS, 100)])


def long_names(client: redis.Redis) -> None:
    for chart in range(10):
        for start in range(0, HOSTS // 10, 1000):
            names = [f"host-{chart:03d}-{i:06d}.fleet.example.com" for i in range(start, start + 1000)]
            client.sadd(f"stateservice:{{c{chart:03d}}}:hosts:wave", *names)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="host-memory-") as tmp:
        server = h.RedisProcess(Path(tmp))
        server.start()
        try:
            with redis.Redis(port=server.port) as client:
                print(f"redis-server {h.redis_server_version(server.binary)}")
                print(f"100 sets of 1,000 hosts h0..h99999: {grow(client, short_names):.1f} bytes per host")
                print(f"10 sets of 10,000 FQDN-like hosts: {grow(client, long_names):.1f} bytes per host")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
