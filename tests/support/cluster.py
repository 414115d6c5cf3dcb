"""A throwaway Redis Cluster of N masters (no replicas) on free ports of 127.0.0.1, for cluster tests.

Each node is a `redis-server` (the binary the service embeds, or $REDIS_SERVER, as in
`redisproc.py`) with `cluster-enabled yes`, its own dir and nodes file, no persistence and
`cluster-require-full-coverage no`, so a killed master takes only its own slots away. The
slots are split evenly with CLUSTER ADDSLOTS, the nodes meet with CLUSTER MEET (no redis-cli
needed), and `start()` returns once every node says `cluster_state:ok` and knows them all.
`kill(i)` and `restart(i)` take one master away and bring it back on its port, dir and nodes file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import redis

from stateservice.store.redis.embedded import find_redis_server

SLOTS = 16384
BUS_OFFSET = 10000  # Redis 6.2 has no cluster-port setting: the bus listens on port + 10000
START_TIMEOUT = 20.0


def cluster_port() -> int:
    """A free port of 127.0.0.1 whose bus port (port + 10000) is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + BUS_OFFSET > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair (port, port + 10000) on 127.0.0.1")


class ClusterNode:
    def __init__(self, directory: Path, binary: Path) -> None:
        self.directory = directory
        self.binary = binary
        self.port = cluster_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [str(self.binary), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory)]
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        argv += ["--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no"]
        argv += ["--save", "", "--appendonly", "no", "--logfile", "redis.log", "--daemonize", "no"]
        self.proc = subprocess.Popen(argv, cwd=self.directory, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with self.client() as client:
                    if client.info("server")["process_id"] == self.proc.pid:
                        return
            except redis.RedisError:
                pass
            if self.proc.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"cluster node on port {self.port} exited ({self.proc.returncode}):\n{log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster node on port {self.port} did not answer in {START_TIMEOUT}s")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class Cluster:
    """N masters, each owning an even share of the 16384 slots."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        env_binary = os.environ.get("REDIS_SERVER")
        binary = Path(env_binary) if env_binary else find_redis_server()
        self.nodes = [ClusterNode(directory / f"node-{i}", binary) for i in range(masters)]

    @property
    def url(self) -> str:
        return f"redis://{self.nodes[0].address}"

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            share = SLOTS // len(self.nodes)
            for i, node in enumerate(self.nodes):
                last = SLOTS if i == len(self.nodes) - 1 else (i + 1) * share
                with node.client() as client:
                    client.execute_command("CLUSTER ADDSLOTS", *range(i * share, last))
            with self.nodes[0].client() as first:
                for node in self.nodes[1:]:
                    first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def wait_ok(self, timeout: float = START_TIMEOUT) -> None:
        """Until every running node says cluster_state:ok, knows every node and has the same slot map."""
        deadline = time.monotonic() + timeout
        while True:
            infos, maps = [], set()
            for node in self.nodes:
                if node.proc is None:
                    continue
                with node.client() as client:
                    infos.append(client.cluster("INFO"))
                    slots = client.execute_command("CLUSTER SLOTS")
                maps.add(tuple(sorted((int(start), int(end), int(master[1])) for start, end, master, *_ in slots)))
            if len(maps) == 1 and all(
                info["cluster_state"] == "ok"
                and int(info["cluster_known_nodes"]) == len(self.nodes)
                and int(info["cluster_slots_assigned"]) == SLOTS
                for info in infos
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not become ok in {timeout}s: {infos} {maps}")
            time.sleep(0.05)

    def owner(self, key: str) -> ClusterNode:
        """The node that serves `key`'s slot (asked of the cluster, not computed here)."""
        with next(node for node in self.nodes if node.proc is not None).client() as client:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                if int(start) <= slot <= int(end):
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise AssertionError(f"no master serves the slot of {key!r}")

    def flush(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                with node.client() as client:
                    client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
