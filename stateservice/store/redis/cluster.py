"""Redis Cluster: a `Redis` whose every command goes to the master owning its key's slot.

The store modules take one `redis.asyncio.Redis` and use it unchanged on a cluster: plain
commands are routed by their key's slot, `pipeline(transaction=True)` binds to the master
owning the slot of the first key it WATCHes (a chart's keys share the `{CHART}` hash tag, so
its whole WATCH/MULTI/EXEC lives on that master), and `pubsub()` subscribes on any one
master (classic PUBLISH reaches every node of a cluster). Each master gets its own plain
client from the factory given (the same fast timeouts, no retries and blocking pool as a
single server).

Why not redis-py's `RedisCluster`: its transaction pipeline runs every command after WATCH
in a new thread with its own event loop (blocking ours), its per-node pools raise instead
of waiting, and it cannot send the one command of a chart transaction that lies outside the
chart's slot, the SADD of the charts index. Here that SADD is sent right after EXEC (it is
idempotent; a chart is served either way, `stateservice status` lists it once it lands).

Topology is `CLUSTER SLOTS`, read on first use and again after a MOVED reply, a CLUSTERDOWN
or a node that cannot be reached (the next command reads it again; the failed one answers
503 as during any outage). A MOVED or ASK inside a chart transaction is a WatchError: the
store retries it on the slot's new master. What a cluster cannot do raises: a command whose
slot no master serves, or a transaction over keys of two slots (Redis's CROSSSLOT).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import str_if_bytes

from stateservice.store import keys

log = structlog.get_logger(__name__)

MAX_REDIRECTS = 5
# commands without a key: any master answers them (TIME: the clock; PING: /readyz)
ANY_MASTER = frozenset({"TIME", "PING", "PUBLISH", "INFO", "CLUSTER INFO", "CLUSTER SLOTS", "CLUSTER KEYSLOT"})
EVERY_MASTER = frozenset({"SCRIPT LOAD", "SCRIPT FLUSH"})  # a script must be known wherever its key lives


def node_url(url: str, host: str, port: int) -> str:
    """`url` (its scheme, credentials and options) pointed at host:port."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{address}" if userinfo else address))


class ClusterRedis(Redis):
    """A Redis Cluster behind the `Redis` interface the store uses; see the module docstring."""

    def __init__(self, url: str, client: Callable[[str], Redis]) -> None:
        self._url = url
        self._client = client
        self._nodes: dict[tuple[str, int], Redis] = {}
        self._slots: list[tuple[str, int] | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._masters: list[tuple[str, int]] = []
        self._stale = True
        self._failed: set[tuple[str, int]] = set()
        self._refreshing: asyncio.Lock | None = None
        self._turn = itertools.count()
        parts = urlsplit(url)
        self._seed = (parts.hostname or "127.0.0.1", parts.port or 6379)
        seed = self._node(self._seed)
        # commands, callbacks and the script encoder come from a plain client; the seed's pool is never used alone
        super().__init__(connection_pool=seed.connection_pool)

    # -- routing ---------------------------------------------------------------------------

    def masters(self) -> list[tuple[str, int]]:
        """The masters serving a slot (as last read), reachable ones first; the seed node before the first read."""
        return sorted(self._masters or [self._seed], key=lambda address: address in self._failed)

    async def master_for(self, key: str | bytes) -> tuple[str, int]:
        """The master that owns `key`'s slot. Raises ConnectionError when no master serves it."""
        if self._stale:
            await self.refresh()
        address = self._slots[key_slot(key.encode() if isinstance(key, str) else key)]
        if address is None:
            self._stale = True
            raise RedisConnectionError(f"no cluster master serves the slot of {key!r} (is the cluster down?)")
        return address

    def client_for(self, address: tuple[str, int]) -> Redis:
        """The plain client for one master."""
        return self._node(address)

    async def refresh(self) -> None:
        """Read the slot map from the first master that answers. Raises ConnectionError when none does."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            if not self._stale:
                return  # another task read it while we waited
            error: Exception | None = None
            for address in dict.fromkeys([*self.masters(), self._seed]):
                try:
                    slots = await self._node(address).execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    self._failed.add(address)
                    error = exc
                    continue
                table: list[tuple[str, int] | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
                for start, end, master, *_replicas in slots:
                    host = str_if_bytes(master[0]) or address[0]  # an empty host means "the node you asked"
                    table[int(start) : int(end) + 1] = [(host, int(master[1]))] * (int(end) - int(start) + 1)
                self._slots, self._stale = table, False
                self._masters = sorted({master for master in table if master is not None})
                self._failed.discard(address)
                log.debug("cluster_slots_read", node=f"{address[0]}:{address[1]}", masters=len(self.masters()))
                return
            raise RedisConnectionError(f"no Redis Cluster node answered CLUSTER SLOTS: {error}")

    def forget(self, address: tuple[str, int] | None = None) -> None:
        """Read the slot map again before the next command (after `address` failed, if given)."""
        self._stale = True
        if address is not None:
            self._failed.add(address)

    def _node(self, address: tuple[str, int]) -> Redis:
        if address not in self._nodes:
            self._nodes[address] = self._client(node_url(self._url, *address))
        return self._nodes[address]

    # -- the Redis interface -------------------------------------------------------------------

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = str(args[0]).upper()
        if self._stale and (name in EVERY_MASTER or name in ANY_MASTER or len(args) < 2):
            await self.refresh()
        if name in EVERY_MASTER:
            return (await asyncio.gather(*(self._send(a, args, options) for a in self.masters())))[0]
        if name in ANY_MASTER or len(args) < 2:
            masters = self.masters()
            for address in masters[:-1]:  # TIME and PING need no particular master: the next one answers
                try:
                    return await self._send(address, args, options)
                except (RedisConnectionError, RedisTimeoutError):
                    continue
            return await self._send(masters[-1], args, options)
        key = args[3] if name in ("EVAL", "EVALSHA") and int(args[2]) > 0 else args[1]
        for _ in range(MAX_REDIRECTS):
            address = await self.master_for(key)
            try:
                return await self._send(address, args, options)
            except MovedError:
                self.forget()
            except AskError as exc:  # the slot is migrating and this key already moved: ask its new master once
                async with self._node((exc.host, exc.port)).pipeline(transaction=False) as pipe:
                    pipe.execute_command("ASKING")
                    pipe.execute_command(*args, **options)
                    return (await pipe.execute())[1]
            except TryAgainError:
                await asyncio.sleep(0.01)
        raise RedisConnectionError(f"{name}: still redirected after {MAX_REDIRECTS} tries (is the cluster resharding?)")

    async def _send(self, address: tuple[str, int], args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        try:
            result = await self._node(address).execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self.forget(address)  # a failover may have moved its slots: read the map before the next command
            raise exc
        except ClusterDownError as exc:
            self.forget()
            raise RedisConnectionError(f"the Redis Cluster is down: {exc}") from exc
        self._failed.discard(address)
        return result

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> SlotPipeline:
        return SlotPipeline(self, transaction)

    def pubsub(self, **kwargs: Any) -> PubSub:
        """A subscription on one master, the next one at each call (so a re-subscription skips a dead one)."""
        masters = self.masters()
        return self._node(masters[next(self._turn) % len(masters)]).pubsub(**kwargs)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        for node in self._nodes.values():
            await node.aclose()
        self._nodes.clear()


class SlotPipeline(Pipeline):
    """A pipeline on the master of one slot: the slot of the first key WATCHed (or queued)."""

    def __init__(self, router: ClusterRedis, transaction: bool) -> None:
        super().__init__(router.connection_pool, router.response_callbacks, transaction, None)
        self.router = router  # not `cluster`: that is the CLUSTER command of every client
        self.slot: int | None = None
        self.address: tuple[str, int] | None = None
        self.after_exec: list[tuple[Any, ...]] = []
        self.replayed = False

    async def _bind(self, key: Any) -> None:
        if self.address is None:
            self.address = await self.router.master_for(key)
            self.slot = key_slot(key.encode() if isinstance(key, str) else key)
            self.connection_pool = self.router.client_for(self.address).connection_pool

    async def watch(self, *names: Any) -> Any:  # type: ignore[override]
        await self._bind(names[0])
        return await super().watch(*names)

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().immediate_execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except WatchError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc

    def pipeline_execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] == "SADD" and args[1] == keys.charts_index() and self.slot != key_slot(args[1].encode()):
            self.after_exec.append(args)  # the one key outside the chart's slot: idempotent, so sent after EXEC
            return self
        return super().pipeline_execute_command(*args, **options)  # type: ignore[no-untyped-call]

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        after, self.after_exec = self.after_exec, []
        if self.command_stack and self.address is None:
            await self._bind(_first_key(self.command_stack[0][0]))
        stack = list(self.command_stack)
        try:
            results: list[Any] = await super().execute(raise_on_error)
        except WatchError:
            raise
        except Exception as exc:
            error = self._translate(exc)
            if self.is_transaction or self.replayed or not isinstance(error, WatchError):
                raise error from exc
            # a plain pipeline refused with MOVED ran nothing: send it once more, to the slot's new master
            async with SlotPipeline(self.router, False) as again:
                again.replayed = True
                for args, options in stack:
                    again.pipeline_execute_command(*args, **options)
                results = await again.execute(raise_on_error)
        for args in after:
            try:
                await self.router.execute_command(*args)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("charts_index_not_updated", key=args[1], member=args[2], error=str(exc))
        return results

    def _translate(self, exc: Exception) -> Exception:
        """A redirection means the slot moved: re-read the map, and retry (WatchError). An outage stays one."""
        if isinstance(exc, (AskError, TryAgainError)):  # MovedError is an AskError
            self.router.forget()
            return WatchError(f"the chart's slot moved while watching it: {exc}")
        if isinstance(exc, ClusterDownError):
            self.router.forget()
            return RedisConnectionError(f"the Redis Cluster is down: {exc}")
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
            self.router.forget(self.address)
        return exc

    async def reset(self) -> None:  # type: ignore[override]
        await super().reset()  # type: ignore[no-untyped-call]
        self.slot = self.address = None
        self.after_exec = []


def _first_key(command: tuple[Any, ...]) -> Any:
    """The key a queued command is routed by: its first argument, but a script's first key (EVALSHA SHA NUMKEYS
    KEY ...), not its digest, which hashes to any slot (it routed to the right node one time in three)."""
    if str(command[0]).upper() in ("EVALSHA", "EVAL") and len(command) > 3 and int(command[2]) > 0:
        return command[3]
    return command[1]
