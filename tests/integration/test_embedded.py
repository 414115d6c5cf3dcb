"""The embedded redis-server: real processes in tmp dirs, no mocks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from stateservice.errors import StartupError
from stateservice.store.redis.embedded import EmbeddedRedis, find_redis_cli, find_redis_server


def _state(pid: int) -> str | None:
    """The process state letter from /proc ("S", "T", "Z", ...), or None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None


def servers_in(directory: Path) -> list[int]:
    """Pids of live redis-server processes whose title names a socket under `directory`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:
            continue
        if b"redis-server" in cmdline and str(directory).encode() in cmdline and _state(int(proc.name)) != "Z":
            pids.append(int(proc.name))
    return pids


def gone(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid  # the servers are children of this test process
    except ChildProcessError:
        return _state(pid) is None  # already reaped


def pidfile_pid(data_dir: Path) -> int:
    return int((data_dir / "redis.pid").read_text())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Callable[[Path], EmbeddedRedis]]:
    """Make EmbeddedRedis objects; at teardown stop them and kill any redis-server left under tmp_path."""
    made: list[EmbeddedRedis] = []

    def make(directory: Path) -> EmbeddedRedis:
        made.append(EmbeddedRedis(directory))
        return made[-1]

    yield make
    for server in made:
        with contextlib.suppress(Exception):
            server.stop(timeout=2)
    for pid in servers_in(tmp_path):
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    assert servers_in(tmp_path) == []


def test_binaries_found() -> None:
    assert find_redis_server().name == "redis-server"
    assert find_redis_cli().name == "redis-cli"
    assert os.access(find_redis_server(), os.X_OK)


def test_start_answers_ping(embedded: Callable[[Path], EmbeddedRedis], data_dir: Path) -> None:
    server = embedded(data_dir)
    assert not server.is_running()

    assert server.ensure_running() is True

    assert server.is_running()
    assert server.url == f"unix://{data_dir}/redis.sock"
    assert server.socket_path == data_dir / "redis.sock"
    assert data_dir.stat().st_mode & 0o777 == 0o700
    with redis.Redis(unix_socket_path=str(server.socket_path)) as client:
        assert client.ping() is True
    with redis.Redis.from_url(server.url) as client:
        assert client.ping() is True
    assert servers_in(data_dir) == [pidfile_pid(data_dir)]


def test_data_survives_stop_and_start(embedded: Callable[[Path], EmbeddedRedis], data_dir: Path) -> None:
    server = embedded(data_dir)
    server.ensure_running()
    with redis.Redis(unix_socket_path=str(server.socket_path)) as client:
        client.set("greeting", "hello")

    server.stop()
    assert not server.is_running()
    assert server.ensure_running() is True

    with redis.Redis(unix_socket_path=str(server.socket_path)) as client:
        assert client.get("greeting") == b"hello"
    assert (data_dir / "appendonly.aof").stat().st_size > 0


def test_second_call_reuses(embedded: Callable[[Path], EmbeddedRedis], data_dir: Path) -> None:
    server = embedded(data_dir)
    assert server.ensure_running() is True
    pid = pidfile_pid(data_dir)

    assert server.ensure_running() is False

    assert pidfile_pid(data_dir) == pid
    assert servers_in(data_dir) == [pid]


def test_second_object_reuses(embedded: Callable[[Path], EmbeddedRedis], data_dir: Path) -> None:
    assert embedded(data_dir).ensure_running() is True
    pid = pidfile_pid(data_dir)

    assert embedded(data_dir).ensure_running() is False

    assert pidfile_pid(data_dir) == pid
    assert servers_in(data_dir) == [pid]


def test_concurrent_starts_start_one(embedded: Callable[[Path], EmbeddedRedis], data_dir: Path) -> None:
    servers = [embedded(data_dir) for _ in range(4)]
    results: list[bool] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.ensure_running())) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False, False, False, True]
    assert servers_in(data_dir) == [pidfile_pid(data_dir)]


def test_stale_pidfile_and_socket_replaced(embedded: Callable[[Path], EmbeddedRedis], data_dir: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    data_dir.mkdir(mode=0o700)
    (data_dir / "redis.pid").write_text(f"{dead.pid}\n")
    with socket.socket(socket.AF_UNIX) as sock:  # bound, then closed: the file stays, nobody listens
        sock.bind(str(data_dir / "redis.sock"))
    server = embedded(data_dir)

    assert server.ensure_running() is True

    assert server.is_running()
    assert pidfile_pid(data_dir) != dead.pid
    assert servers_in(data_dir) == [pidfile_pid(data_dir)]


def test_hung_server_killed_and_replaced(embedded: Callable[[Path], EmbeddedRedis], data_dir: Path) -> None:
    first = embedded(data_dir)
    first.ensure_running()
    with redis.Redis(unix_socket_path=str(first.socket_path)) as client:
        client.set("kept", "yes")
    hung = pidfile_pid(data_dir)
    os.kill(hung, signal.SIGSTOP)  # alive, holds the pidfile and the socket, answers nothing

    with capture_logs() as logs:
        assert embedded(data_dir).ensure_running() is True

    assert gone(hung)
    assert servers_in(data_dir) == [pidfile_pid(data_dir)] != [hung]
    assert {"event": "embedded_redis_unresponsive", "pid": hung}.items() <= logs[0].items()
    with redis.Redis(unix_socket_path=str(first.socket_path)) as client:
        assert client.get("kept") == b"yes"  # in the AOF (written before the reply), though never fsynced


def test_too_long_socket_path(embedded: Callable[[Path], EmbeddedRedis], tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 110)

    with pytest.raises(StartupError, match="choose a shorter --data-dir") as raised:
        embedded(data_dir).ensure_running()

    assert str(data_dir / "redis.sock") in str(raised.value)
    assert not data_dir.exists()


def test_stop_without_server_is_a_no_op(embedded: Callable[[Path], EmbeddedRedis], data_dir: Path) -> None:
    embedded(data_dir).stop()  # no data dir at all
    data_dir.mkdir()
    embedded(data_dir).stop()  # a data dir, nothing running

    assert servers_in(data_dir) == []


def test_stop_ends_the_process(embedded: Callable[[Path], EmbeddedRedis], data_dir: Path) -> None:
    server = embedded(data_dir)
    server.ensure_running()
    pid = pidfile_pid(data_dir)

    server.stop()

    assert gone(pid)
    assert not server.is_running()
    assert not (data_dir / "redis.pid").exists()
    assert not server.socket_path.exists()


def test_stop_from_another_object(embedded: Callable[[Path], EmbeddedRedis], data_dir: Path) -> None:
    embedded(data_dir).ensure_running()
    pid = pidfile_pid(data_dir)

    embedded(data_dir).stop()

    assert gone(pid)
