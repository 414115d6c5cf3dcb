"""A throwaway Sentinel deployment on 127.0.0.1: one master, its replicas, three sentinels.

Every process is the binary the service embeds (`find_redis_server()`, or $REDIS_SERVER); a
sentinel is the same binary with `--sentinel`. The data nodes run `appendonly yes` and
`appendfsync always`; the sentinels use a short `down-after-milliseconds` so a killed master
is replaced within a few seconds. `kill_master()` SIGKILLs it, as in a crash.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from stateservice.store.redis.embedded import find_redis_server
from tests.support.redisproc import free_port

SERVICE = "stateservice-test"
START_TIMEOUT = 15.0


class Node:
    """One redis-server (data node or sentinel) on a free port, in its own dir."""

    def __init__(self, binary: Path, directory: Path, config: str, *, sentinel: bool = False) -> None:
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / ("sentinel.conf" if sentinel else "redis.conf")
        conf.write_text(
            f'bind 127.0.0.1\nport {self.port}\ndir "{directory}"\nlogfile "{directory / "redis.log"}"\n'
            "daemonize no\n" + config
        )
        argv = [str(binary), str(conf)] + (["--sentinel"] if sentinel else [])
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2, socket_connect_timeout=1)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"


class SentinelDeployment:
    """Master + `replicas` replicas + `sentinels` sentinels (quorum 2); `url` is the service's --redis."""

    def __init__(
        self,
        directory: Path,
        *,
        replicas: int = 2,
        sentinels: int = 3,
        down_after_ms: int = 800,
        failover_timeout_ms: int = 3000,
    ) -> None:
        env_binary = os.environ.get("REDIS_SERVER")
        self.binary = Path(env_binary) if env_binary else find_redis_server()
        self.directory = directory
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.data: list[Node] = []
        self.sentinels: list[Node] = []

    # -- life ----------------------------------------------------------------------------

    def start(self) -> SentinelDeployment:
        """Start the master, its replicas (until in sync), then the sentinels (until they see all of it). A start
        that fails stops every process it started (none outlives its test to be collected in another's)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> SentinelDeployment:
        durable = 'appendonly yes\nappendfsync always\nsave ""\nrepl-diskless-sync yes\nrepl-diskless-sync-delay 0\n'
        master = Node(self.binary, self.directory / "master", durable)
        self.data.append(master)
        self._wait(lambda: _ping(master), master)
        for i in range(self.replica_count):
            replica = Node(
                self.binary, self.directory / f"replica{i}", durable + f"replicaof 127.0.0.1 {master.port}\n"
            )
            self.data.append(replica)
        self._wait(lambda: self._online_replicas(master) == self.replica_count, master)
        for i in range(self.sentinel_count):
            self.sentinels.append(
                Node(
                    self.binary,
                    self.directory / f"sentinel{i}",
                    f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2\n"
                    f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {SERVICE} {self.replica_count}\n",
                    sentinel=True,
                )
            )
        for node in self.sentinels:
            self._wait(lambda node=node: self._sentinel_ready(node), node)
        return self

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data]:
            node.kill()

    def kill_master(self) -> Node:
        """SIGKILL the current master (no shutdown, no final fsync); it stays down."""
        port = self.master_port()
        node = next(n for n in self.data if n.port == port)
        node.kill()
        return node

    # -- what it looks like ----------------------------------------------------------------

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def master_port(self) -> int:
        """The master's port as a majority of the sentinels that answer name it."""
        named: list[int] = []
        for node in self.sentinels:
            if node.proc is None:
                continue
            with contextlib.suppress(redis.RedisError), node.client() as client:
                address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                if address:
                    named.append(int(address[1]))
        if not named:
            raise RuntimeError("no sentinel names a master")
        return max(set(named), key=named.count)

    def master(self) -> redis.Redis:
        return redis.Redis(port=self.master_port(), decode_responses=True, socket_timeout=2)

    def wait_for_failover(self, old_port: int, timeout: float = 20.0) -> int:
        """The new master's port once every sentinel names it and it answers as a master with a replica."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, RuntimeError):
                ports = set()
                for node in self.sentinels:
                    with node.client() as client:
                        ports.add(int(client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1]))
                if len(ports) == 1 and old_port not in ports:
                    port = ports.pop()
                    with redis.Redis(port=port, decode_responses=True, socket_timeout=2) as client:
                        if client.info("replication")["role"] == "master":
                            return port
            time.sleep(0.1)
        raise AssertionError(f"no failover within {timeout}s\n" + "\n".join(n.log()[-3000:] for n in self.sentinels))

    # -- plumbing ------------------------------------------------------------------------

    def _online_replicas(self, master: Node) -> int:
        with master.client() as client:
            info = client.info("replication")
        return sum(
            1
            for key, value in info.items()
            if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        )

    def _sentinel_ready(self, node: Node) -> bool:
        with node.client() as client:
            state = client.sentinel_master(SERVICE)
        return bool(
            int(state["num-slaves"]) == self.replica_count
            and int(state["num-other-sentinels"]) == self.sentinel_count - 1
        )

    def _wait(self, ready: Callable[[], bool], node: Node) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(redis.RedisError, OSError):
                if ready():
                    return
            for other in [node, *self.data, *self.sentinels]:  # one that died (a port taken meanwhile) says why
                if other.proc is not None and other.proc.poll() is not None:
                    status = other.proc.returncode
                    raise RuntimeError(f"redis-server on port {other.port} exited ({status}):\n{other.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {node.port} not ready in {START_TIMEOUT}s:\n{node.log()}")
            time.sleep(0.05)


def _ping(node: Node) -> bool:
    with node.client() as client:
        return bool(client.ping())
