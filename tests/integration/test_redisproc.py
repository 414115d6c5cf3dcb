"""The test fixtures themselves: a flushed session server and private servers that die and come back."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from tests.support.redisproc import RedisProcess


@pytest.mark.parametrize("n", [1, 2])
def test_redis_url_starts_empty(redis_url: str, n: int) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
        client.set("left-behind", n)  # the next round must not see it


def test_factory_server_killed_and_restarted(redis_factory: Callable[..., RedisProcess]) -> None:
    server = redis_factory(appendonly=True)
    port, pid = server.port, server.pid
    assert server.url == f"redis://127.0.0.1:{port}/0"
    with redis.Redis.from_url(server.url) as client:
        client.set("durable", "yes")

        server.kill()
        with pytest.raises(redis.ConnectionError):
            client.ping()

        server.restart()
        assert (server.port, server.pid != pid) == (port, True)
        assert client.get("durable") == b"yes"  # AOF written before the reply survives SIGKILL


def test_factory_servers_are_private(redis_url: str, redis_factory: Callable[..., RedisProcess]) -> None:
    server = redis_factory()
    assert server.url != redis_url
    with redis.Redis.from_url(server.url) as client:
        client.set("mine", 1)
    server.restart()
    with redis.Redis.from_url(server.url) as client:
        assert client.dbsize() == 0  # no persistence by default
