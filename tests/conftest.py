"""Shared fixtures: one real redis-server per test run, a flushed URL per test, private servers on demand."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from stateservice.errors import StartupError
from tests.support.redisproc import RedisProcess


def _redis_process(directory: Path, *, appendonly: bool = False) -> RedisProcess:
    try:
        return RedisProcess(directory, appendonly=appendonly)
    except StartupError as e:  # the suite needs a real Redis: say how to get one rather than skip
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One redis-server for the whole run, without persistence."""
    server = _redis_process(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The session server's URL, flushed: each test starts with an empty Redis."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisProcess]]:
    """`make(appendonly=False)`: start a private redis-server (to kill or restart); all stopped at teardown."""
    servers: list[RedisProcess] = []

    def make(appendonly: bool = False) -> RedisProcess:
        server = _redis_process(tmp_path / f"redis-{len(servers)}", appendonly=appendonly)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
