"""Redis Sentinel: `redis+sentinel://` URLs, and a client that follows the master the sentinels name.

    redis+sentinel://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB][?sentinel_password=P]

USER and PASSWORD authenticate to the Redis servers (master and replicas); the sentinels are
asked without credentials unless `sentinel_password=` (and `sentinel_username=`) says otherwise.
PORT defaults to 26379. `rediss+sentinel://` is refused: TLS through Sentinel is untested here.

Each new connection asks the sentinels where the master is, and the pool asks again about once
a second while it is used, closing its connections to any other address; so after a failover
requests move to the new master by themselves, even off an old master that still answers as
one (paused, cut off, or the loser of a flapping failover), and a connection to a demoted
master drops when it answers READONLY. Until the sentinels name a master, requests fail fast (503) like
any outage: the same short timeouts, no retries and blocking pool as `connect.py`.
Not here: writing the data or choosing replicas to read from (every command goes to the master).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

SCHEME = "redis+sentinel"
TLS_SCHEME = "rediss+sentinel"
DEFAULT_PORT = 26379
OPTIONS = ("sentinel_username", "sentinel_password")
CHECK_INTERVAL = 1.0  # seconds between asking the sentinels whether the master moved, while in use
FORM = "redis+sentinel://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]"

_HOST = re.compile(r"(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:/\[\]@?#]+))(?::(?P<port>\d{1,5}))?")


@dataclass(frozen=True, slots=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def is_sentinel(url: str) -> bool:
    """Whether `url` asks for Sentinel (`redis+sentinel://`, or the refused `rediss+sentinel://`)."""
    return url.partition("://")[0].lower() in (SCHEME, TLS_SCHEME)


def parse(url: str) -> SentinelURL:
    """The parts of a `redis+sentinel://` URL. Raises ValueError saying what is wrong (never the password)."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() == TLS_SCHEME:
        raise ValueError(
            "rediss+sentinel:// (TLS to Sentinel) is not supported; use redis+sentinel:// on a trusted network"
        )
    if scheme.lower() != SCHEME or not sep:
        raise ValueError(f"not a Sentinel URL; the form is {FORM}")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_address(entry) for entry in hosts.split(","))
    service, _, db = path.partition("/")
    if not service:
        raise ValueError(f"no service name (the name in `sentinel monitor NAME ...`); the form is {FORM}")
    db = db.rstrip("/")
    if db and not db.isdigit():
        raise ValueError(f"{db!r} is not a database number; the form is {FORM}")
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in OPTIONS:
            raise ValueError(f"unknown option {name!r}; a Sentinel URL takes only {', '.join(OPTIONS)}")
        options[name] = value
    return SentinelURL(
        sentinels=sentinels,
        service=unquote(service),
        db=int(db or 0),
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def redact(url: str) -> str:
    """`url` with its passwords (in the address and in `sentinel_password=`) replaced by `***`."""
    head, sep, query = url.partition("?")
    scheme, slashes, rest = head.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    if ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = "&".join(
        f"{q.partition('=')[0]}=***" if q.partition("=")[0].endswith("password") else q for q in query.split("&")
    )
    return f"{scheme}{slashes}{netloc}{slash}{path}{sep}{query}"


class SentinelRedis(Redis):
    """The master's client; closing it also closes its connections to the sentinels."""

    sentinels: Sentinel | None = None  # (`sentinel` is a Redis command method)
    sentinel_clients: tuple[Redis, ...] = ()  # every one, whatever order discovery has put them in since

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        if isinstance(pool, BlockingSentinelPool):
            await pool.stop_checking()
        await super().aclose(close_connection_pool)
        for client in self.sentinel_clients:
            await client.aclose()


class _Sentinels(Sentinel):
    """redis-py's Sentinel, asking for the master one call at a time.

    `discover_master` moves the sentinel that answered to the front of the list while it walks
    the list, so two calls at once (the pool's background check and a new connection) could
    duplicate one sentinel and drop another from it: the dropped one was then never asked again.
    """

    def __init__(self, clients: list[Redis], sentinel_kwargs: dict[str, Any]) -> None:
        super().__init__([], sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        self.sentinels = clients
        self._asking = asyncio.Lock()

    async def discover_master(self, service_name: str) -> Any:
        async with self._asking:
            return await super().discover_master(service_name)


class _SentinelClient(Redis):
    """A client of one sentinel. An answer it cannot read (a sentinel address that is some other
    server, a broken sentinel) counts as that sentinel being unreachable, so the next one is asked
    and, if none answers, the request gets a 503 rather than a 500."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except (RedisError, OSError):
            raise
        except Exception as exc:
            kwargs = self.connection_pool.connection_kwargs
            raise RedisConnectionError(
                f"sentinel {kwargs.get('host')}:{kwargs.get('port')} gave an answer that cannot be read "
                f"({type(exc).__name__}: {exc})"
            ) from exc


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool, waiting for a free connection, that keeps to the master the sentinels name.

    redis-py asks the sentinels only when it opens a connection, so connections kept open in
    the pool stay on a replaced master for as long as it answers as one: up to about ten
    seconds, until the sentinels demote it, for a master that was paused or cut off or that
    lost a flapping failover; writes made there are lost when it is demoted. So the pool asks
    again at most every CHECK_INTERVAL while it is used (in the background, off the requests'
    path; a change closes the idle connections) and closes a connection to any other address
    when it comes back, so the next request reconnects to the named master.
    """

    _checked = 0.0  # monotonic time of the last check
    _checker: asyncio.Task[None] | None = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        now = time.monotonic()
        if now - self._checked >= CHECK_INTERVAL and (self._checker is None or self._checker.done()):
            self._checked = now
            self._checker = asyncio.create_task(self._check(), name="sentinel-master-check")
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call,no-any-return]

    async def release(self, connection: AbstractConnection) -> None:
        if self.is_stale(connection):
            await connection.disconnect()  # it reconnects to the named master when next used
        await super().release(connection)

    def is_stale(self, connection: AbstractConnection | None) -> bool:
        """Whether `connection` is open to another address than the master the sentinels last named."""
        if connection is None or self.master_address is None or not connection.is_connected:
            return False
        address = (getattr(connection, "host", None), getattr(connection, "port", None))
        return address != tuple(self.master_address)

    async def stop_checking(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
            self._checker = None

    async def _check(self) -> None:
        # no sentinel answering is not this task's to report: the next connection says so (503)
        with contextlib.suppress(RedisError, OSError):
            await self.get_master_address()  # type: ignore[no-untyped-call]


def connect(url: str, *, decode_responses: bool = True, **fast: Any) -> SentinelRedis:
    """A client of the master that `url`'s sentinels name. `fast`: connect()'s timeouts, retry and pool size."""
    target = parse(url)
    pool_size, pool_timeout = fast.pop("max_connections"), fast.pop("timeout")
    sentinel_kwargs = {**fast, "username": target.sentinel_username, "password": target.sentinel_password}
    clients: list[Redis] = [_SentinelClient(host=h, port=p, **sentinel_kwargs) for h, p in target.sentinels]
    sentinel = _Sentinels(clients, sentinel_kwargs)
    client = sentinel.master_for(
        target.service,
        redis_class=SentinelRedis,
        connection_pool_class=BlockingSentinelPool,
        max_connections=pool_size,
        timeout=pool_timeout,
        db=target.db,
        username=target.username,
        password=target.password,
        decode_responses=decode_responses,
        **fast,
    )
    assert isinstance(client, SentinelRedis)
    client.sentinels = sentinel
    client.sentinel_clients = tuple(clients)
    return client


def _address(entry: str) -> tuple[str, int]:
    match = _HOST.fullmatch(entry)
    if not entry or match is None:
        raise ValueError(f"{entry!r} is not a sentinel address (HOST, HOST:PORT or [IPv6]:PORT); the form is {FORM}")
    port = int(match["port"] or DEFAULT_PORT)
    if not 0 < port < 65536:
        raise ValueError(f"{entry!r}: {port} is not a port number (1-65535)")
    return (match["ip6"] or match["name"]), port
