"""Redis clients with the timeouts and pool that keep an outage short and a busy worker whole.

An outage must answer 503 within a second or two: connect and socket timeouts are short and
redis-py's own retries are off (a failed request fails now; the next one reconnects). A busy
worker must not answer 503 while Redis is up: the pool blocks for a free connection instead
of raising "Too many connections" when a thousand requests arrive at once.
With `cluster=True` the URL names one node of a Redis Cluster, and every master gets such a
client of its own (see `cluster.py`). A `redis+sentinel://` URL gives a client of the master
its sentinels name, with the same timeouts and pool, that follows it over a failover (see `sentinel.py`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stateservice.store.redis import sentinel
from stateservice.store.redis.cluster import ClusterRedis

SCHEMES = ("redis", "rediss", "unix", sentinel.SCHEME)


def connect(
    url: str,
    *,
    max_connections: int = 64,
    socket_timeout: float = 2.0,
    connect_timeout: float = 1.0,
    pool_timeout: float = 5.0,
    cluster: bool = False,
    decode_responses: bool = True,
) -> Redis:
    """A client for `url` (redis://, rediss://, unix://, redis+sentinel://) that fails fast; str replies unless told."""
    if cluster:
        return ClusterRedis(
            url,
            lambda node: connect(
                node,
                max_connections=max_connections,
                socket_timeout=socket_timeout,
                connect_timeout=connect_timeout,
                pool_timeout=pool_timeout,
                decode_responses=decode_responses,
            ),
        )
    pool_options: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": pool_timeout,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if sentinel.is_sentinel(url):
        return sentinel.connect(url, decode_responses=decode_responses, **pool_options)
    pool = BlockingConnectionPool.from_url(url, decode_responses=decode_responses, **pool_options)
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


def redact(url: str) -> str:
    """`url` with any password (in the address or a `password=` query) replaced by `***`, for logs and errors."""
    if sentinel.is_sentinel(url):
        return sentinel.redact(url)  # several hosts: urlsplit cannot read its port
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:
        return "(an unreadable URL)"  # it may hold a password we cannot find: show none of it
    query = parts.query
    if "password=" in query:
        query = "&".join("password=***" if q.startswith("password=") else q for q in query.split("&"))
    netloc = parts.netloc
    if password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{user}:***@{host}" + (f":{port}" if port else "")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def with_credentials(url: str, username: str | None, password: str | None, ca_file: str | None = None) -> str:
    """`url` with the ACL username/password (unless it has its own) and, for rediss://, a CA file to verify with."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if password and parts.password is None and parts.scheme != "unix":
        user = quote(parts.username or username or "", safe="")
        netloc = f"{user}:{quote(password, safe='')}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if ca_file is not None:
        query = "&".join(q for q in (query, "ssl_cert_reqs=required&ssl_ca_certs=" + quote(ca_file)) if q)
    return urlunsplit(parts._replace(netloc=netloc, query=query))
