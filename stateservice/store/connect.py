"""Redis clients with the timeouts and pool that keep an outage short and a busy worker whole.

An outage must answer 503 within a second or two: connect and socket timeouts are short and
redis-py's own retries are off (a failed request fails now; the next one reconnects). A busy
worker must not answer 503 while Redis is up: the pool blocks for a free connection instead
of raising "Too many connections" when a thousand requests arrive at once.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SCHEMES = ("redis", "rediss", "unix")


def connect(
    url: str,
    *,
    max_connections: int = 64,
    socket_timeout: float = 2.0,
    connect_timeout: float = 1.0,
    pool_timeout: float = 5.0,
) -> Redis:
    """A client for `url` (redis://, rediss://, unix://) that returns str and fails fast on an outage."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


def redact(url: str) -> str:
    """`url` with any password replaced by `***`, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
