"""Writes acknowledged only once N replicas have them: `WAIT N timeout` after each EXEC.

WAIT counts the replicas that have every write of the *connection* it runs on, so it must
follow EXEC on the very connection that ran the transaction. redis-py's pipeline gives that
connection back to the pool inside `execute()`, which is why the WAIT lives in the pipeline
(right after EXEC is read) and not after `execute()` in ChartStore.

Fewer acknowledgements within the timeout raise StoreUnavailable (503): the write is on the
master and may or may not survive a failover, so the caller retries (a report with `host=`
is counted once however often it is retried). WAIT makes a write survive the loss of the
master; it does not make Redis a consensus store (see docs/redis.md's durability advice).
"""

from __future__ import annotations

from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

from stateservice.errors import StoreUnavailable

log = structlog.get_logger(__name__)

GRACE = 1.0  # seconds past the WAIT timeout that we wait for its answer before calling Redis unreachable


def replicated(redis: Redis, replicas: int, timeout: float) -> Redis:
    """`redis` itself when `replicas` is 0; else a client on its pool whose transactions WAIT for `replicas`."""
    if replicas <= 0:
        return redis
    return ReplicatedRedis(redis, replicas, timeout)


class ReplicatedRedis(Redis):
    """Shares `redis`'s pool (closing `redis` closes it); only its transactions differ."""

    def __init__(self, redis: Redis, replicas: int, timeout: float) -> None:
        super().__init__(connection_pool=redis.connection_pool)
        self.replicas = replicas
        self.wait_timeout = timeout

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return WaitingPipeline(
            self.connection_pool,
            self.response_callbacks,
            transaction,
            shard_hint,
            replicas=self.replicas,
            timeout=self.wait_timeout,
        )


class WaitingPipeline(Pipeline):
    """A pipeline whose committed transactions WAIT for replicas before `execute()` returns.

    `_execute_transaction` is redis-py's (private, but stable since 4.2) step that sends
    MULTI...EXEC on the connection `execute()` holds: the one place where that connection is
    still ours right after EXEC.
    """

    def __init__(self, *args: Any, replicas: int, timeout: float) -> None:
        super().__init__(*args)
        self.replicas = replicas
        self.wait_timeout = timeout

    async def _execute_transaction(self, connection: Connection, commands: Any, raise_on_error: bool) -> Any:
        result = await super()._execute_transaction(connection, commands, raise_on_error)
        await wait(connection, self.replicas, self.wait_timeout)  # only a committed EXEC gets here
        return result


async def wait(connection: Connection, replicas: int, timeout: float) -> int:
    """WAIT on `connection` for its writes to reach `replicas` replicas. Raises StoreUnavailable if fewer did."""
    await connection.send_command("WAIT", replicas, max(1, round(timeout * 1000)))
    try:
        reply = await connection.read_response(timeout=timeout + GRACE)
    except ResponseError as exc:  # e.g. "WAIT cannot be used with replica instances": a demoted master
        log.warning("write_not_replicated", replicas=replicas, error=str(exc))
        raise StoreUnavailable(
            "the write may not have been committed: Redis refused to WAIT for replicas; retry shortly",
            replicas=replicas,
        ) from None
    if reply is None:  # redis-py's answer to a read that timed out: WAIT's reply may still come
        await connection.disconnect(nowait=True)  # and must not be read as the next command's
        log.warning("write_not_replicated", replicas=replicas, error="Redis did not answer WAIT")
        raise StoreUnavailable(
            f"the write reached the Redis master, but Redis did not answer WAIT within {timeout + GRACE:g}s, so "
            "a failover may lose it; retry (with host=, a report is counted once however often it is retried)",
            replicas=replicas,
        )
    acked = int(reply)
    if acked < replicas:
        log.warning("write_not_replicated", replicas=replicas, acknowledged=acked, timeout=timeout)
        raise StoreUnavailable(
            f"the write reached the Redis master, but only {acked} of the {replicas} replica(s) required "
            f"(--redis-wait-replicas) confirmed it within {timeout:g}s, so a failover may lose it; "
            "retry (with host=, a report is counted once however often it is retried)",
            replicas=replicas,
            acknowledged=acked,
        )
    return acked
