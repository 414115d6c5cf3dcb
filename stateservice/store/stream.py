"""The events stream's consumer: every worker reads `stateservice:{machines}:events` in one group.

Each worker is a consumer (HOSTNAME:PID:RANDOM) of the group `stateservice`. It reads up to 200 new
entries at a time on a connection of its own (a read blocks for a second: it must hold none of
the shared pool's connections; it leaves replies undecoded, so one entry that is not UTF-8
cannot fail the read of all), turns each into an `Event` and applies the batch with
`Machines.apply_all`, whose script acknowledges every entry in the same step as it applies it:
an entry is acknowledged exactly when its event is applied (or refused, and then dead-lettered).
After an error a consumer first applies its own pending entries (read from id 0), then new ones.
A worker that dies leaves its read entries pending; every `claim_after / 2` seconds each
consumer takes over (XAUTOCLAIM) the entries idle for longer than `claim_after` and applies
them the same way. The event id (given, or "stream-" + the entry id) makes an entry applied
twice, by a slow consumer and the one that claimed it, a duplicate: applied once. An entry
deleted (XDEL, trimmed) after it was read comes back without fields: it is only acknowledged
(on Redis 6.2 XAUTOCLAIM claims it without its id: the claimer finds it in its own pending list).

An entry that cannot become an event (no event, bad JSON, bad names, an unknown configuration)
never reaches the script: it goes to the dead-letter stream with `error`, `message`, `entry`
and its own fields, is acknowledged in the same MULTI/EXEC and, when it names an instance and
an event id, leaves its outcome where HTTP leaves one (a marker keeps a claimer and a slow
consumer from adding two letters). A batch the script fails on (an error reply that is no
outage) is applied again one event at a time, and the event that fails is dead-lettered as
`apply_failed`: one bad entry never holds up the others. Redis errors are logged, the consumer
backs off (0.5 s doubling to 5 s) and resumes by itself; it never ends the worker.
What is not here: what an entry means (stream_entry.py), the rules (core/machines.py), the
script (machine_scripts.py), HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError, OutOfMemoryError, ReadOnlyError, ResponseError, WatchError

from stateservice.store import keys
from stateservice.store.machines import Event, Machines, Outcome
from stateservice.store.redis.cluster import ClusterRedis
from stateservice.store.redis.connect import connect
from stateservice.store.stream_entry import APPLY_FAILED, UNKNOWN_CONFIGURATION, Fields, Rejected, parse, text
from stateservice.telemetry import metrics

log = structlog.get_logger(__name__)

FORGET_IDLE = """
-- KEYS[1] = the stream / ARGV[1] = its group, ARGV[2] = idle milliseconds, ARGV[3] = the caller (kept)
-- drops the group's consumers with nothing pending, idle longer than ARGV[2]; returns how many
local dropped = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info.name ~= ARGV[3] and info.pending == 0 and info.idle > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info.name)
    dropped = dropped + 1
  end
end
return dropped
"""

BATCH = 200  # entries per read: one script applies them all
BLOCK_MS = 1000
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0
MEASURE_EVERY = 1.0  # seconds between two updates of the lag and pending gauges
CLAIM_PAGES = 10  # XAUTOCLAIM pages per pass: a large backlog of a dead consumer does not stall new reads
DEAD_LETTERS_MAX = 100_000  # approximate cap of the dead-letter stream, as the script's XADD
SOURCE = "stream"
# Entries are read undecoded whatever the client: redis-py's decoding would raise on a field that is
# not UTF-8 after Redis delivered the batch, and fail every read of it (stream_entry.parse decodes)
RAW = {NEVER_DECODE: True}
DUPLICATE = "duplicate"
BURY_ATTEMPTS = 5
CLOSE_GRACE = 2.0  # seconds close() lets a read and its batch finish: its entries are applied, not left to a claim
# Error replies of a Redis that cannot write now (whatever the events): raised, never dead-lettered.
# Also found inside a script's error, where Redis 6.2 prefixes them with "ERR Error running script".
_OUTAGE = re.compile(r"(?:^|[\s-])(?:OOM|READONLY|MISCONF|NOREPLICAS|MASTERDOWN|LOADING|BUSY|CLUSTERDOWN|TRYAGAIN)\b")


def consumer_name() -> str:
    """This worker's name in the group: HOSTNAME:PID:8 random hex digits, since containers may share
    a hostname and a PID: two consumers of one name would share (and claim from) one pending list."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def reader_for(url: str, *, cluster: bool = False) -> Redis:
    """The consumer's own client: one connection, whose timeout outlasts a blocking read; replies stay bytes."""
    timeout = BLOCK_MS / 1000 + 5.0
    return connect(url, max_connections=1, socket_timeout=timeout, cluster=cluster, decode_responses=False)


def outage(exc: ResponseError) -> bool:
    """Whether an error reply says Redis cannot serve now, rather than that these events fail."""
    return isinstance(exc, NoScriptError | OutOfMemoryError | ReadOnlyError) or bool(_OUTAGE.search(str(exc)))


class StreamConsumer:
    """One worker's consumer of the events stream; `start()` runs it in a task, `close()` stops it."""

    def __init__(
        self,
        machines: Machines,
        reader: Redis,
        *,
        claim_after: float,
        name: str | None = None,
        stream: str | None = None,
        group: str = keys.MACHINES_GROUP,
        block_ms: int = BLOCK_MS,
    ) -> None:
        self.machines = machines
        self.reader = reader
        self.claim_after = claim_after
        self.name = name or consumer_name()
        self.stream = stream or keys.events_stream()
        self.group = group
        self.block_ms = block_ms
        self.closing = False
        self._closed = asyncio.Event()
        self._waiting = False  # in a blocking read (entries not yet ours to apply): close() need not wait
        self._grouped = False
        self._recovering = False
        self._claim_due = 0.0
        self._measured = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="stream-consumer")

    async def close(self) -> None:
        """Stop reading (a read and batch in flight get CLOSE_GRACE seconds to finish) and close the reader."""
        self.closing = True
        self._closed.set()
        if self._task is not None:
            if not self._waiting:  # applying a batch: let it finish; a read merely waiting for entries is cut at once
                await asyncio.wait({self._task}, timeout=CLOSE_GRACE)
            self._task.cancel()  # still busy (Redis slow or gone): its entries stay pending, for a claim
            await asyncio.wait({self._task}, timeout=5)
        with contextlib.suppress(Exception):  # Redis may be gone at shutdown
            await self.reader.aclose()

    async def run(self) -> None:
        """Consume until closed; on any error log, back off and try again (a worker never dies of its stream)."""
        log.info("stream_consuming", consumer=self.name, stream=self.stream, group=self.group)
        delay = BACKOFF_FIRST
        # `closing` as well as cancellation: a cancel inside a Redis read can surface as TimeoutError
        while not self.closing:
            try:
                await self.step()
            except Exception as exc:
                if self.closing:
                    return
                self._grouped = False  # the group may be gone (the stream deleted): create it again
                self._recovering = True  # what this consumer read before the error may be unapplied
                if isinstance(self.reader, ClusterRedis):
                    self.reader.forget()  # a failover may have moved the slot
                error = str(exc) or type(exc).__name__
                log.warning("stream_failed", consumer=self.name, error=error, retry_in=delay)
                with contextlib.suppress(TimeoutError):  # close() ends the wait
                    async with asyncio.timeout(delay):  # not wait_for: see store/announce.py's
                        await self._closed.wait()
                delay = min(delay * 2, BACKOFF_MAX)
            else:
                delay = BACKOFF_FIRST

    async def step(self) -> int:
        """One turn: create the group if needed, claim when due, read and apply, measure; the entries handled."""
        node = await self._node()
        if not self._grouped:
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                await node.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            self._grouped = True
        handled = 0
        if time.monotonic() >= self._claim_due:
            # due again later even if this claim fails: a failing claim must not keep every turn from reading
            self._claim_due = time.monotonic() + self.claim_after / 2
            handled += await self.claim(node)
        if self._recovering:
            recovered = await self._read(node, "0")  # its own pending entries, without waiting for a claim
            self._recovering = recovered > 0  # until none is left
            handled += recovered
        if not self._recovering and not self.closing:
            handled += await self._read(node, ">", self.block_ms)
        if time.monotonic() - self._measured >= MEASURE_EVERY:
            await self.measure(node)
        return handled

    async def _read(self, node: Redis, after: str, block: int | None = None) -> int:
        waiting = [] if block is None else ["BLOCK", block]
        args = ["GROUP", self.group, self.name, "COUNT", BATCH, *waiting, "STREAMS", self.stream, after]
        self._waiting = block is not None
        try:
            reply: Any = await node.execute_command("XREADGROUP", *args, **RAW)  # type: ignore[no-untyped-call]
        finally:
            self._waiting = False
        return sum([await self.handle(entries) for _, entries in reply or []])

    async def _node(self) -> Redis:
        """Where the stream lives: XREADGROUP and XGROUP do not name the key first, so a Cluster cannot route them."""
        if isinstance(self.reader, ClusterRedis):
            return self.reader.client_for(await self.reader.master_for(self.stream))
        return self.reader

    async def claim(self, node: Redis) -> int:
        """Take over and apply the entries idle past `claim_after` (a dead consumer's); the entries handled."""
        start, handled = "0-0", 0
        for _ in range(CLAIM_PAGES):
            idle_ms = int(self.claim_after * 1000)
            args = [self.stream, self.group, self.name, idle_ms, start, "COUNT", BATCH]
            reply: Any = await node.execute_command("XAUTOCLAIM", *args, **RAW)  # type: ignore[no-untyped-call]
            start, claimed = text(reply[0]), [(entry, fields) for entry, fields in reply[1] if entry is not None]
            if len(claimed) < len(reply[1]):
                # Redis 6.2 claims a deleted entry without saying which: it is now in this consumer's
                # pending list, where the recovery read finds it by id, without fields, and acknowledges it
                self._recovering = True
            if claimed:
                log.info("stream_claimed", consumer=self.name, entries=len(claimed), first=text(claimed[0][0]))
                handled += await self.handle(claimed)
            if start == "0-0":
                break
        await self._forget_consumers(node)
        return handled

    async def _forget_consumers(self, node: Redis) -> None:
        """Drop consumers with nothing pending, unseen for long: each restarted worker is a new one.

        One script, so that a consumer reading between the look and the drop cannot lose its pending entries."""
        idle_ms = int(max(self.claim_after, 60.0) * 1000)
        await node.eval(FORGET_IDLE, 1, self.stream, self.group, idle_ms, self.name)

    async def handle(self, entries: Sequence[tuple[bytes | str, Fields | None]]) -> int:
        """Apply the entries that are events (one script), dead-letter the others (one MULTI/EXEC) and
        acknowledge those deleted since they were read (they come without fields)."""
        events: list[Event] = []
        rejected: list[Rejected] = []
        deleted: list[str] = []
        for entry, fields in entries:
            if not fields:  # an entry has at least one field: this one was deleted
                deleted.append(text(entry))
                continue
            parsed = await self._resolve(parse(text(entry), fields))
            if isinstance(parsed, Event):
                events.append(parsed)
            else:
                rejected.append(parsed)
        if deleted:
            await self.machines.redis.xack(self.stream, self.group, *deleted)
            log.info("stream_deleted_acknowledged", consumer=self.name, entries=len(deleted), first=deleted[0])
        if rejected:
            await self._bury(rejected)
        if events:
            await self._apply(events)
        return len(entries)

    async def _apply(self, events: Sequence[Event]) -> None:
        """Apply a batch; if the script fails for it, one event at a time, dead-lettering the one that fails."""
        try:
            outcomes = await self.machines.apply_all(events, self.stream, self.group)
        except ResponseError as exc:
            if outage(exc):
                raise
            if len(events) == 1:
                await self._bury([_failed(events[0], exc)])
            else:  # the events before the failing one may be applied already: again, they are duplicates
                for event in events:
                    await self._apply([event])
            return
        self._count(outcomes)

    async def _resolve(self, parsed: Event | Rejected) -> Event | Rejected:
        """An event naming an unknown configuration is rejected here: the script would not know how to create it."""
        if isinstance(parsed, Rejected) or parsed.ref is None or await self.machines.configuration(parsed.ref):
            return parsed
        assert parsed.entry is not None
        return Rejected(
            parsed.entry,
            UNKNOWN_CONFIGURATION,
            f"no configuration {parsed.ref}",
            dict(zip(parsed.dead[::2], parsed.dead[1::2], strict=True)),
            parsed.target(),
            parsed.event_id,
            parsed.event,
        )

    async def _bury(self, rejected: Sequence[Rejected]) -> None:
        """Dead-letter and acknowledge; an entry another consumer buried (it claimed it while this one was
        slow) is only acknowledged: its marker, watched and set in one transaction, says so."""
        fresh = None
        for _ in range(BURY_ATTEMPTS):
            if (fresh := await self._bury_once(rejected)) is not None:
                break
        if fresh is None:  # a consumer still burying the same entries: the run loop backs off and reads them again
            raise WatchError(f"dead letters: {BURY_ATTEMPTS} conflicting attempts")
        for r in fresh:
            log.info("stream_dead_letter", entry=r.entry, error=r.error, message=r.message, instance=r.instance)
            metrics.events(r.error, SOURCE)
        if len(fresh) < len(rejected):
            metrics.events(DUPLICATE, SOURCE, len(rejected) - len(fresh))

    async def _bury_once(self, rejected: Sequence[Rejected]) -> list[Rejected] | None:
        """One transaction: the entries dead-lettered now; None when another consumer wrote a marker first."""
        markers = [keys.buried(r.entry) for r in rejected]
        async with self.machines.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(*markers)
            seen = await pipe.mget(markers)
            fresh = [r for r, marker in zip(rejected, seen, strict=True) if marker is None]
            pipe.multi()  # type: ignore[no-untyped-call]
            for r in fresh:
                self._letter(pipe, r)
            pipe.xack(self.stream, self.group, *(r.entry for r in rejected))
            try:
                await pipe.execute()
            except WatchError:
                return None
        return fresh

    def _letter(self, pipe: Any, r: Rejected) -> None:
        letter: dict[Any, Any] = r.dead_letter()
        pipe.set(keys.buried(r.entry), "1", px=self.machines.retention_ms)
        pipe.xadd(keys.dead_letters(), letter, maxlen=DEAD_LETTERS_MAX, approximate=True)
        if r.instance is not None and r.event_id is not None:
            body = orjson.dumps(r.outcome()).decode()
            key = keys.event_outcome(r.instance, r.event_id)
            pipe.set(key, body, px=self.machines.retention_ms, nx=True)  # a first outcome stands

    def _count(self, outcomes: Sequence[Outcome]) -> None:
        counts: dict[str, int] = {}
        for outcome in outcomes:
            label = DUPLICATE if outcome.duplicate else str(outcome.body.get("outcome"))
            counts[label] = counts.get(label, 0) + 1
        for label, count in counts.items():
            metrics.events(label, SOURCE, count)

    async def measure(self, node: Redis) -> tuple[float, int]:
        """Set the lag (age of the oldest entry not applied yet) and pending gauges; returns them."""
        self._measured = time.monotonic()
        summary = await node.xpending(self.stream, self.group)
        groups = await node.xinfo_groups(self.stream)
        last = next((text(g["last-delivered-id"]) for g in groups if text(g["name"]) == self.group), "0-0")
        undelivered: Any = await node.xrange(self.stream, min=f"({last}", count=1)
        ids = [text(entry) for entry in (summary.get("min"), *(u[0] for u in undelivered)) if entry]
        oldest = [int(entry.partition("-")[0]) for entry in ids]
        now_ms = (await self.machines.clock()).timestamp() * 1000
        lag = max(0.0, (now_ms - min(oldest)) / 1000) if oldest else 0.0
        pending = int(summary.get("pending", 0))
        metrics.stream(lag, pending)
        return lag, pending


def _failed(event: Event, exc: ResponseError) -> Rejected:
    """An event the script failed on, to dead-letter; no outcome is kept, so it may be sent again."""
    assert event.entry is not None
    fields = dict(zip(event.dead[::2], event.dead[1::2], strict=True))
    return Rejected(event.entry, APPLY_FAILED, str(exc), fields, event.target(), None, event.event)
