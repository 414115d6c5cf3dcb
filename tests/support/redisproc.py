"""A throwaway redis-server on a free TCP port of 127.0.0.1, for tests that need a real Redis.

Uses the binary the service embeds (`find_redis_server()`), or $REDIS_SERVER. No persistence unless
`appendonly=True`; `kill()` and `restart()` let outage tests take Redis away and bring it back on the
same port and dir.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from stateservice.store.redis.embedded import find_redis_server

START_TIMEOUT = 10.0
PORT_ATTEMPTS = 5


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody used a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """One redis-server process in `directory`: start, stop, kill, restart."""

    def __init__(self, directory: Path, *, appendonly: bool = False, binary: Path | None = None) -> None:
        self.directory = directory.absolute()
        self.appendonly = appendonly
        env_binary = os.environ.get("REDIS_SERVER")
        self.binary = binary or (Path(env_binary) if env_binary else find_redis_server())
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("RedisProcess was never started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("RedisProcess is not running")
        return self._proc.pid

    @property
    def logfile(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> None:
        """Start and wait for PING; a first start retries on another port if its port got taken."""
        if self._proc is not None:
            raise RuntimeError(f"redis-server already running (pid {self._proc.pid})")
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._port is not None:
            self._launch(self._port)
            return
        for attempt in range(PORT_ATTEMPTS):
            port = free_port()
            try:
                self._launch(port)
            except PortTaken:
                if attempt == PORT_ATTEMPTS - 1:
                    raise
                continue
            self._port = port
            return

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful: SIGTERM (Redis fsyncs its AOF if it has one), SIGKILL after `timeout`."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL, as in a crash: no shutdown, no final fsync."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        """Stop if running, start again on the same port and dir."""
        self.stop()
        self.start()

    def _launch(self, port: int) -> None:
        conf = self.directory / "redis.conf"
        conf.write_text(
            "bind 127.0.0.1\n"
            f"port {port}\n"
            f'dir "{self.directory}"\n'
            f"appendonly {'yes' if self.appendonly else 'no'}\n"
            # always, not everysec: with everysec Redis may hold back an AOF write for up to 2 s while a
            # slow fsync runs (a loaded CI disk), and a SIGKILL then loses a write the tests counted on
            "appendfsync always\n"
            'save ""\n'
            f'logfile "{self.logfile}"\n'
            "daemonize no\n"
        )
        log_start = self.logfile.stat().st_size if self.logfile.exists() else 0
        with self.logfile.open("ab") as log:
            proc = subprocess.Popen([str(self.binary), str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while _server_pid(port) != proc.pid:  # another server may answer on a port taken from us
            if proc.poll() is not None:
                with self.logfile.open("rb") as log:
                    log.seek(log_start)
                    output = log.read().decode(errors="replace")
                if "Address already in use" in output:
                    raise PortTaken(port)
                raise RuntimeError(f"redis-server exited with status {proc.returncode}:\n{output}")
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"redis-server on port {port} did not answer PING in {START_TIMEOUT}s")
            time.sleep(0.02)
        self._proc = proc


class PortTaken(RuntimeError):
    def __init__(self, port: int) -> None:
        super().__init__(f"port {port} of 127.0.0.1 is already in use")


def _server_pid(port: int) -> int | None:
    """The process_id of the Redis that answers INFO on `port` once loaded, else None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"INFO server\r\n")
            reply = b""
            while not reply.endswith(b"\r\n\r\n") and not reply.startswith(b"-"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return None
    for line in reply.decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.partition(":")[2])
    return None  # "-LOADING ...": not ready yet
