"""`store/redis/replicated.wait` against a real redis-server that stops answering."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from stateservice.errors import StoreUnavailable
from stateservice.store.redis.connect import connect
from stateservice.store.redis.replicated import wait
from tests.support.redisproc import RedisProcess


async def test_a_wait_left_unanswered_answers_503_and_closes_its_connection(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    server = redis_factory()
    client = connect(server.url)
    try:
        connection = await client.connection_pool.get_connection()
        await connection.send_command("PING")
        assert await connection.read_response() == "PONG"

        os.kill(server.pid, signal.SIGSTOP)  # the transaction's EXEC was answered, the WAIT after it is not
        try:
            with pytest.raises(StoreUnavailable, match="did not answer WAIT"):
                await wait(connection, 1, 0.1)
        finally:
            os.kill(server.pid, signal.SIGCONT)

        # WAIT's late reply (0 replicas) must not be read as the next command's on this pooled connection
        assert not connection.is_connected
        await connection.send_command("ECHO", "fresh")
        assert await connection.read_response() == "fresh"
        await client.connection_pool.release(connection)
    finally:
        await client.aclose()
