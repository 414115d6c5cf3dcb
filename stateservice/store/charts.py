"""Chart state in Redis: read a snapshot, let `core.rules` decide, write the answer atomically.

Every write is one WATCH/MULTI/EXEC transaction over the chart's keys (counter, transition,
host set and history change together or not at all), retried a bounded number of times when
another worker wrote first. Within one process, writes to one chart also take a lock, so
that a hot chart's writers queue here instead of invalidating each other's transactions in
Redis; between processes WATCH alone keeps the counts exact.
A transaction cut off mid-way (a request's deadline, a Redis that stopped answering) drops its
connection, WATCH and any unread reply with it; one whose EXEC went unanswered is not retried,
since it may have been applied: the error reaches the caller (503), who retries.

Every operation first applies the time transitions that are due (by the Redis clock), in
the same transaction: a host is never told "wait" for a state whose time has passed, and
no transition depends on the leader being alive. Because a time move is applied only to
the snapshot it was decided from, racing workers cannot apply it twice.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice.core import batch, rules
from stateservice.core.chart import Chart, Snapshot, Transition
from stateservice.errors import StateServiceError, StoreBusy
from stateservice.store import bulk, codec, holding, keys
from stateservice.store.clock import Clock, RedisClock
from stateservice.store.group import GroupCommit
from stateservice.store.redis.cluster import ClusterRedis
from stateservice.telemetry import metrics

log = structlog.get_logger(__name__)

T = TypeVar("T")

CONTENDED_FOR = 1.0  # seconds a failed transaction marks its chart as written by other processes too
BATCH = 500  # charts a pipelined read or a registering transaction covers: 10,000 charts in 20 round trips
CHUNK_ATTEMPTS = 3  # a registering chunk that meets other writers this often registers one chart at a time
# what a gate check reads
_GATE_FIELDS = [keys.CURRENT_STATE, keys.ENTERED_AT, keys.HALTED, keys.HALTED_AT, keys.CONTINUATION]
MAX_PAUSE = 0.01  # seconds, at most, a contended chart's next batch waits (see ChartStore._pause)


@dataclass(frozen=True, slots=True)
class ChartView:
    """Everything `GET /charts/{chart}` shows: the snapshot, every state's counter, the hosts counted."""

    chart: Chart
    snapshot: Snapshot
    counters: dict[str, int]
    hosts: list[str]
    due_at: datetime | None = None
    context: str | None = None  # the `context` field as stored (JSON): see store/approvals.py


class ChartStore:
    """The charts' live state in Redis. Holds no state of its own but locks and settings."""

    def __init__(
        self,
        redis: Redis,
        *,
        clock: Clock | None = None,
        max_attempts: int = 64,
        history_length: int = 10_000,
        lock_timeout: float = 10.0,
        coalesce: bool = True,
        retention: float = 86400.0,
    ) -> None:
        self.redis = redis
        self.clock = clock or RedisClock(redis).now
        self.max_attempts = max_attempts
        self.history_length = history_length
        self.lock_timeout = lock_timeout
        self.coalesce = coalesce
        self.retention = retention  # seconds a settled approval's continuation is kept (--event-retention)
        # whether a live dashboard listens anywhere (store/announce.py keeps it): only then do reports, slots and
        # failures that move nothing pay a PUBLISH (on a Cluster, one every node hears)
        self.announcing = False
        self.commits = 0  # transactions that went through, and retries after a conflict: for benchmarks and logs
        self.retries = 0
        self.heard = -math.inf  # loop time Redis last answered a read or transaction here (see web/deadline.py)
        self._locks: dict[str, asyncio.Lock] = {}
        self._contended: dict[str, float] = {}  # chart -> until when (loop time) it counts as written by others
        self._took: dict[str, float] = {}  # chart -> seconds its last transaction here took
        self._reports: dict[tuple[str, str], GroupCommit[batch.Entry, rules.Report | StateServiceError]] = {}
        self._reads: dict[tuple[str, str], GroupCommit[None, Snapshot]] = {}
        # chart name -> (chart, current_state, entered_at, their snapshot, its next due time): see _decoded
        self._decodes: dict[str, tuple[Chart, str, str | None, Snapshot, datetime | None]] = {}

    # -- reads ---------------------------------------------------------------------------

    async def current_state(self, chart: Chart) -> Snapshot:
        """The snapshot for a gate check: one round trip, plus a transaction only when a time move is due.

        With coalescing, concurrent checks of one chart share the next read (never one
        already sent, so nobody is answered from before it asked).
        """
        if not self.coalesce:
            return await self._current_state(chart)
        group = self._reads.get((chart.name, chart.digest))
        if group is None:
            group = GroupCommit(lambda items, _more: self._shared_read(chart, len(items)))
            self._reads[(chart.name, chart.digest)] = group
        return await group.submit(None)

    async def _shared_read(self, chart: Chart, callers: int) -> list[Snapshot]:
        return [await self._current_state(chart)] * callers

    async def _current_state(self, chart: Chart) -> Snapshot:
        key = keys.chart_state(chart.name)
        state, entered, halted, halted_at, continuation = await self.redis.hmget(key, _GATE_FIELDS)
        self.heard = asyncio.get_running_loop().time()
        if state is None:
            return await self.advance(chart)
        fields = {keys.CURRENT_STATE: state, keys.ENTERED_AT: entered or ""}
        if halted:
            fields.update({keys.HALTED: halted, keys.HALTED_AT: halted_at or ""})
        if continuation:
            fields[keys.CONTINUATION] = continuation
        snap = codec.decode_snapshot(chart, fields)
        assert snap is not None
        due = rules.next_due(chart, snap) if chart.state(snap.state) else None
        if due is not None and due <= await self.clock():
            return await self.advance(chart)
        return snap

    async def view(self, chart: Chart) -> ChartView:
        snap = await self.advance(chart)
        fields = await self.redis.hgetall(keys.chart_state(chart.name))
        counters = {
            s.name: codec.read_counter(chart, fields, s.name, rules.start_count(s)) for s in chart.states if s.counter
        }
        hosts = sorted(await self.redis.smembers(keys.chart_hosts(chart.name, snap.state)))
        return ChartView(chart, snap, counters, hosts, rules.next_due(chart, snap), fields.get(keys.CONTEXT))

    async def history(self, chart: Chart, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` history records, newest first."""
        entries = await self.redis.xrevrange(keys.chart_history(chart.name), count=limit)
        return [codec.decode_history(entry_id, fields) for entry_id, fields in entries]

    # -- writes --------------------------------------------------------------------------

    async def advance(self, chart: Chart) -> Snapshot:
        """Apply the time moves due now (creating the state hash if missing); the snapshot after them."""

        async def attempt(pipe: Pipeline) -> tuple[Snapshot, list[Transition]]:
            now = await self.clock()
            snap, created, _ = await self._read(pipe, chart, now)
            snap, moves = timed(rules.advance(chart, snap, now))
            if created or moves:
                pipe.multi()
                self.write(pipe, chart, snap, moves, created)
                await execute(pipe)
            return snap, moves

        while True:  # a long catch-up (an elapsed loop after weeks down) takes several transactions
            snap, moves = await self.transact(chart, "advance", attempt)
            log_moves(moves)
            if len(moves) < rules.MAX_CHAIN:
                return snap

    async def report(
        self, chart: Chart, state: str, host: str | None = None, *, actor: str | None = None, remote: str | None = None
    ) -> rules.Report:
        """Count one report of `state` (once per `host` and visit). Raises what `rules.report` raises.

        With coalescing (the default), reports to one chart that arrive while its previous
        transaction is in flight share the next one, decided as if serialised.
        """
        entry = batch.Entry(state, host, actor, remote)
        if self.coalesce:
            group = self._reports.get((chart.name, chart.digest))
            if group is None:
                group = GroupCommit(
                    lambda entries, more: self._commit_reports(chart, entries, more),
                    pause=lambda: self._pause(chart.name),
                )
                self._reports[(chart.name, chart.digest)] = group
            outcome = await group.submit(entry)
        else:
            outcome = (await self._commit_reports(chart, [entry]))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _commit_reports(
        self, chart: Chart, entries: list[batch.Entry], more: Callable[[], list[batch.Entry]] | None = None
    ) -> list[rules.Report | StateServiceError]:
        """One transaction for a batch of reports: each entry's answer, in order (with those `more()` added)."""
        key = keys.chart_state(chart.name)
        entries = list(entries)

        async def attempt(pipe: Pipeline) -> tuple[batch.Decision, list[Transition]]:
            if more is not None:
                entries.extend(more())  # reports queued since: this attempt reads after they arrived
            now = await self.clock()
            hosts, slotted, reads = _report_reads(chart, entries)
            snap, created, replies = await self._read(pipe, chart, now, *reads)
            held = {
                state: dict(zip(names, raws, strict=True))
                for (state, names), raws in zip(slotted.items(), replies[len(hosts) :], strict=True)
            }
            replies = replies[: len(hosts)]
            snap, moves = timed(rules.advance(chart, snap, now))
            if len(moves) >= rules.MAX_CHAIN:
                raise CatchUp  # decide only on a caught-up chart: catch up first, then retry
            members = {
                state: {h for h, flag in zip(hosts[state], flags, strict=True) if flag}
                for state, flags in zip(hosts, replies, strict=True)
            }
            # a state just entered by a time move has nobody counted yet
            counted = members.pop(snap.state, set()) if not moves else set()
            decision = batch.decide(chart, snap, entries, now, counted, members)
            if not (decision.changed or created or moves):
                return decision, moves
            pipe.multi()
            self.write(pipe, chart, snap, moves, created)
            self.write(pipe, chart, decision.snapshot, decision.transitions)
            if decision.counters:
                pipe.hset(key, mapping={keys.counter_field(s): str(n) for s, n in decision.counters.items()})
            if decision.new_hosts:
                pipe.sadd(keys.chart_hosts(chart.name, decision.snapshot.state), *sorted(decision.new_hosts))
            for state, finished in decision.finished.items():
                if finished:
                    pipe.sadd(keys.chart_hosts(chart.name, state), *sorted(finished))
            if held:
                _release_reported(pipe, chart, entries, decision, held, now, self.record)
            self.changed(pipe, chart.name, decision.snapshot.state)
            await execute(pipe)
            return decision, moves

        while True:
            try:
                decision, moves = await self.transact(chart, "report", attempt)
                break
            except CatchUp:
                await self.advance(chart)
        log_moves([*moves, *decision.transitions])
        return decision.outcomes

    def _pause(self, name: str) -> float:
        """Seconds to wait before a chart's next batch of reports: none unless other processes write it too.

        Two workers that both start their next transaction the moment the last one ends keep
        landing EXECs inside each other's WATCH windows. While a chart has lately failed a
        transaction here, waiting about as long as one takes leaves that room to the other
        writer, and the batch it waits for only grows (measured: fewer retries, same throughput).
        """
        if asyncio.get_running_loop().time() >= self._contended.get(name, 0.0):
            return 0.0
        return min(self._took.get(name, 0.0), MAX_PAUSE)

    async def reset(
        self, chart: Chart, host: str | None = None, *, actor: str | None = None, remote: str | None = None
    ) -> Transition:
        """Put the chart back to its initial state, every counter at its start, and record it (with who did it)."""
        key = keys.chart_state(chart.name)

        async def attempt(pipe: Pipeline) -> tuple[Transition, str | None]:
            now = await self.clock()  # before WATCH: the window another write can fail us in stays short
            [(previous, waiting)] = await watched(pipe, key, ("HMGET", key, keys.CURRENT_STATE, keys.CONTINUATION))
            prior = Snapshot(previous, 0, now) if previous else None
            snap, move = rules.reset(chart, prior, now, host)
            move = replace(move, actor=actor, remote=remote)
            pipe.multi()
            self._create(pipe, chart, snap)
            self.record(pipe, move)
            self._define(pipe, chart, now)
            pipe.publish(keys.chart_channel(chart.name), snap.state)
            if waiting:
                self._settle(pipe, chart, waiting, previous, now)
            await execute(pipe)
            return move, waiting

        move, waiting = await self.transact(chart, "reset", attempt)
        if waiting:  # outside the chart's slot, so not in its transaction
            await self.redis.expire(keys.continuation_owner(waiting), int(self.retention))
        log_moves([move])
        return move

    def _settle(self, pipe: Pipeline, chart: Chart, continuation: str, state: str, now: datetime) -> None:
        """Queue the outcome of an approval's continuation whose visit a reset ends (kept for the retention)."""
        record = keys.chart_continuation(chart.name, continuation)
        why = {"used": False, "state": state, "reason": "the chart was reset", "at": codec.timestamp(now)}
        pipe.hset(record, keys.CONTINUATION_OUTCOME, json.dumps(why))
        pipe.expire(record, int(self.retention))

    async def register(self, chart: Chart) -> Snapshot:
        """Record that this chart is served: its definition, and its state when Redis has none.

        A changed chart file keeps the stored state and counter when that state still exists
        (the new rules apply from the next report). Raises StateRemoved otherwise.
        """
        key = keys.chart_state(chart.name)
        definition = keys.chart_definition(chart.name)

        async def attempt(pipe: Pipeline) -> Snapshot:
            now = await self.clock()  # before WATCH: the window another write can fail us in stays short
            reads = (("HGETALL", key), ("HGET", definition, keys.DEFINITION_DIGEST))
            fields, digest = await watched(pipe, (key, definition), *reads)
            result, writes = self._decide_register(chart, fields, digest, now)  # as a batch decides each chart
            if isinstance(result, StateServiceError):
                raise result
            pipe.multi()
            for name, named, args in writes:
                pipe.execute_command(name, *named, *args)
            await execute(pipe)
            return result

        return await self.transact(chart, "register", attempt)

    async def register_many(self, charts: Sequence[Chart]) -> list[Snapshot | StateServiceError]:
        """`register` for many charts in few round trips: each chart's snapshot, or the error `register` raises.

        Charts go in chunks of BATCH, each one WATCH/MULTI/EXEC over all of its charts' keys
        (a chart whose stored state the new file lacks is left unwritten, with its StateRemoved);
        a chunk that keeps meeting other writers, and every chart on Redis Cluster (whose
        transactions stay within one slot), registers one chart at a time.
        """
        results: list[Snapshot | StateServiceError] = []
        for start in range(0, len(charts), BATCH):
            chunk = charts[start : start + BATCH]
            try:
                done = await self._register_chunk(chunk)
            except StateServiceError:  # e.g. too few replicas confirmed: each chart then answers for itself
                done = None
            if done is None:
                done = [await _caught(self.register(chart)) for chart in chunk]
            results += done
        return results

    async def _register_chunk(self, chunk: Sequence[Chart]) -> list[Snapshot | StateServiceError] | None:
        """One transaction registering `chunk`; None when it cannot be one (Cluster) or kept failing."""
        for _ in range(CHUNK_ATTEMPTS):
            async with self.redis.pipeline(transaction=True) as pipe:
                if type(pipe).watch is not Pipeline.watch:
                    return None
                now = await self.clock()
                watching = tuple(k for c in chunk for k in (keys.chart_state(c.name), keys.chart_definition(c.name)))
                [reply] = await watched(pipe, watching, bulk.registrations_read(chunk))
                results, writes = [], []
                for chart, (fields, digest) in zip(chunk, bulk.decode_registrations(reply), strict=True):
                    result, commands = self._decide_register(chart, fields, digest, now)
                    results.append(result)
                    writes += commands
                pipe.multi()
                if writes:
                    pipe.execute_command(*bulk.write(writes))  # one command, not four a chart: see store/bulk.py
                try:
                    await pipe.execute()
                except WatchError:
                    self.retries += 1
                    continue
                self.commits += 1
                return results
        return None

    def _decide_register(
        self, chart: Chart, fields: dict[str, str], digest: str | None, now: datetime
    ) -> tuple[Snapshot | StateServiceError, list[bulk.Command]]:
        """What `register` answers and writes for `chart`, given what Redis holds; no writes if the state is gone."""
        writes = []
        stored = codec.decode_snapshot(chart, fields)
        if stored is None:
            snap = rules.initial(chart, now)
            writes += bulk.create(chart, snap)
        else:
            try:
                snap = rules.carry_over(chart, stored)
            except StateServiceError as exc:
                return exc, []
            if digest is not None and digest != chart.digest:
                log.warning(
                    "chart_definition_changed",
                    chart=chart.name,
                    old_digest=digest,
                    new_digest=chart.digest,
                    current_state=snap.state,
                    count=snap.count,
                )
        return snap, writes + bulk.define(chart, now)

    async def current_states(self, charts: Sequence[Chart]) -> list[Snapshot | StateServiceError]:
        """`current_state` of many charts: one read a BATCH of them (a script), a transaction only where one is due.

        Each chart's snapshot, or the error its own `current_state` raised. On Redis Cluster, one
        chart at a time.
        """
        if isinstance(self.redis, ClusterRedis):  # its pipelines stay within one slot: one chart at a time
            return [await _caught(self.current_state(chart)) for chart in charts]
        results: list[Snapshot | StateServiceError] = []
        for start in range(0, len(charts), BATCH):
            chunk = charts[start : start + BATCH]
            replies = await bulk.read_states(self.redis, chunk)
            now: datetime | None = None
            for chart, (state, entered) in zip(chunk, replies, strict=True):
                try:
                    snap, due = (None, None) if state is None else self._decoded(chart, state, entered)
                except StateServiceError as exc:  # a corrupt state hash: this chart's error, not the whole read's
                    results.append(exc)
                    continue
                if due is not None:
                    now = now or await self.clock()
                if snap is None or (due is not None and now is not None and due <= now):
                    results.append(await _caught(self.advance(chart)))
                else:
                    results.append(snap)
        return results

    def _decoded(self, chart: Chart, state: str, entered: str | None) -> tuple[Snapshot, datetime | None]:
        """The snapshot `current_states` read, and when its next time move is due. Raises CorruptState.

        Decoded once per stored value: a listing of 10,000 charts whose states did not move reuses
        the last decoding, checked against the values just read (a memo of the decoding, never of Redis).
        """
        known = self._decodes.get(chart.name)
        if known is not None and known[0] is chart and known[1] == state and known[2] == entered:
            return known[3], known[4]
        snap = codec.decode_snapshot(chart, _stored(state, entered))
        assert snap is not None  # a state was read: the hash exists
        due = rules.next_due(chart, snap) if chart.state(snap.state) else None
        self._decodes[chart.name] = (chart, state, entered, snap, due)
        return snap, due

    async def check_carry_overs(self, charts: Sequence[Chart]) -> list[StateServiceError | None]:
        """`check_carry_over` for many charts, one pipelined read a BATCH: each chart's StateRemoved, or None."""
        if isinstance(self.redis, ClusterRedis):  # its pipelines stay within one slot: one chart at a time
            return [await _refused(self.check_carry_over(chart)) for chart in charts]
        results: list[StateServiceError | None] = []
        for start in range(0, len(charts), BATCH):
            chunk = charts[start : start + BATCH]
            async with self.redis.pipeline(transaction=False) as pipe:
                for chart in chunk:
                    pipe.hgetall(keys.chart_state(chart.name))
                replies = await pipe.execute()
            for chart, fields in zip(chunk, replies, strict=True):
                stored = codec.decode_snapshot(chart, fields)
                results.append(None if stored is None else _refusal(chart, stored))
        return results

    async def check_carry_over(self, chart: Chart) -> None:
        """Check, writing nothing, that `register(chart)` would keep the stored state. Raises StateRemoved."""
        stored = codec.decode_snapshot(chart, await self.redis.hgetall(keys.chart_state(chart.name)))
        if stored is not None:
            rules.carry_over(chart, stored)

    async def close(self) -> None:
        """Stop the group commits (at shutdown); callers still queued are cancelled."""
        for reports in self._reports.values():
            await reports.close()
        for reads in self._reads.values():
            await reads.close()

    async def registered(self) -> list[str]:
        """Every chart registered in this Redis, by name."""
        if isinstance(self.redis, ClusterRedis):
            return sorted(await self.redis.smembers(keys.charts_index()))
        return sorted(await bulk.members(self.redis, keys.charts_index()))

    async def definition(self, name: str) -> dict[str, str]:
        return dict(await self.redis.hgetall(keys.chart_definition(name)))

    # -- plumbing (transact, write and record are also store/rollout.py's) ---------------

    async def _read(
        self, pipe: Pipeline, chart: Chart, now: datetime, *reads: tuple[str, ...]
    ) -> tuple[Snapshot, bool, list[Any]]:
        """WATCH the chart's state hash and read it, and `reads`, in one round trip.

        Returns the snapshot (the initial one, and True, when the hash is missing) and the
        replies to `reads`. Every write of a chart writes its state hash, so watching it sees
        every conflict.
        """
        key = keys.chart_state(chart.name)
        fields, *replies = await watched(pipe, key, ("HGETALL", key), *reads)
        snap = codec.decode_snapshot(chart, fields)
        if snap is None:
            log.warning("chart_state_created", chart=chart.name, key=key)
            return rules.initial(chart, now), True, replies
        return snap, False, replies

    def write(
        self, pipe: Pipeline, chart: Chart, snap: Snapshot, moves: Sequence[Transition], created: bool = False
    ) -> None:
        """Queue the snapshot after `moves`: the state hash, cleared host sets, one history record a move."""
        key = keys.chart_state(chart.name)
        if created:
            self._create(pipe, chart, snap)
        for move in moves:
            # a visit begins: its state's hosts, slots and failures start empty; the visit that ended keeps
            # who was counted and who failed (a repeated report is told it counted), but holds no slots
            pipe.delete(*keys.visit_keys(chart.name, move.to_state), keys.chart_slots(chart.name, move.from_state))
            self.record(pipe, move)
        if moves:
            # a halt, and an approval's continuation, belong to the visit they were made in
            pipe.hdel(key, keys.HALTED, keys.HALTED_AT, keys.CONTINUATION)
            pipe.hset(key, mapping=codec.encode_snapshot(snap))
            pipe.publish(keys.chart_channel(chart.name), snap.state)  # wakes long-polls in every worker

    def changed(self, pipe: Pipeline, chart: str, state: str) -> None:
        """Queue the notice of a change to the chart while a dashboard listens (it re-reads the chart); `state` is
        its current state. Its own channel, not the moves': a counted report must not wake every long-poll."""
        if self.announcing:
            pipe.publish(keys.chart_changes(chart), state)

    def _create(self, pipe: Pipeline, chart: Chart, snap: Snapshot) -> None:
        """Queue a fresh state hash at `snap`: every counter at its start, no host counted anywhere."""
        for name, named, args in bulk.create(chart, snap):
            pipe.execute_command(name, *named, *args)

    def record(self, pipe: Pipeline, move: Transition) -> None:
        pipe.xadd(
            keys.chart_history(move.chart),
            codec.encode_transition(move),
            maxlen=self.history_length,
            approximate=True,
        )

    def _define(self, pipe: Pipeline, chart: Chart, now: datetime) -> None:
        for name, named, args in bulk.define(chart, now):
            pipe.execute_command(name, *named, *args)

    async def transact(self, chart: Chart, what: str, attempt: Callable[[Pipeline], Awaitable[T]]) -> T:
        lock = self._locks.setdefault(chart.name, asyncio.Lock())
        try:
            async with asyncio.timeout(self.lock_timeout):
                await lock.acquire()
        except TimeoutError:
            raise StoreBusy(chart.name, 0) from None
        try:
            for tries in range(1, self.max_attempts + 1):
                async with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        began = asyncio.get_running_loop().time()
                        result = await attempt(pipe)
                        self.heard = asyncio.get_running_loop().time()
                        self._took[chart.name] = self.heard - began
                        self.commits += 1
                        return result
                    except WatchError:
                        self.heard = asyncio.get_running_loop().time()  # EXEC refused: an answer all the same
                        self._contended[chart.name] = self.heard + CONTENDED_FOR
                        self.retries += 1
                        metrics.retry()
                        # another process wrote first: re-read and decide again. It has just committed, so
                        # now is the best moment; only when that keeps failing (two writers in lock-step)
                        # does a short, spread-out pause set them apart.
                        log.debug("transaction_retry", chart=chart.name, op=what, attempt=tries)
                        await asyncio.sleep(random.uniform(0, 0.001 * min(tries - 1, 20)))
                    except (asyncio.CancelledError, *LOST):
                        await _drop(pipe)
                        raise
            log.warning("transaction_gave_up", chart=chart.name, op=what, attempts=self.max_attempts)
            raise StoreBusy(chart.name, self.max_attempts)
        finally:
            lock.release()


def _report_reads(
    chart: Chart, entries: Sequence[batch.Entry]
) -> tuple[dict[str, list[str]], dict[str, list[str]], list[tuple[str, ...]]]:
    """What a batch of reports reads with the snapshot, in the same round trip: for each state the reports name,
    which of their hosts are counted already (the current state is among them whenever it matters), and, where
    the state has slots, the slots those hosts hold (a counted report releases its host's)."""
    named: dict[str, set[str]] = {}
    for e in entries:
        if e.host is not None and chart.state(e.state) is not None:
            named.setdefault(e.state, set()).add(e.host)
    hosts = {state: sorted(names) for state, names in named.items()}
    slotted = {state: names for state, names in hosts.items() if _has_slots(chart, state)}
    reads = [("SMISMEMBER", keys.chart_hosts(chart.name, state), *names) for state, names in hosts.items()]
    reads += [("HMGET", keys.chart_slots(chart.name, state), *names) for state, names in slotted.items()]
    return hosts, slotted, reads


def _has_slots(chart: Chart, name: str) -> bool:
    state = chart.state(name)
    return state is not None and state.rollout.concurrency is not None


def _release_reported(
    pipe: Pipeline,
    chart: Chart,
    entries: Sequence[batch.Entry],
    decision: batch.Decision,
    held: dict[str, dict[str, str | None]],
    now: datetime,
    record: Callable[[Pipeline, Transition], None],
) -> None:
    """Queue the release of the slots of hosts whose reports counted (each in the history: who held a slot
    when), and fold their hold times into the average."""
    for entry, outcome in zip(entries, decision.outcomes, strict=True):
        raw = held.get(entry.state, {}).get(entry.host or "")
        if entry.host is None or raw is None or not isinstance(outcome, rules.Report) or not outcome.counted:
            continue
        pipe.hdel(keys.chart_slots(chart.name, entry.state), entry.host)
        done = Transition(chart.name, entry.state, entry.state, "release", now, entry.host, None, entry.actor)
        record(pipe, replace(done, remote=entry.remote, reason="reported"))
        try:
            (slot,) = codec.decode_slots(chart.name, entry.state, {entry.host: raw}).values()
        except StateServiceError:
            continue  # an unreadable slot is freed all the same; it tells nothing of hold times
        holding.observe(pipe, chart.name, entry.state, now - slot.granted_at)


LOST = (RedisConnectionError, RedisTimeoutError, TimeoutError)  # the connection, not the transaction, failed


async def execute(pipe: Pipeline) -> Any:
    """EXEC the queued transaction; a connection lost meanwhile raises its error, never WatchError.

    redis-py's pipeline follows a cut-off EXEC with an UNWATCH, and (given an asyncio Retry; the
    one `connect` gives never calls it) turns a connection error while WATCHing into WatchError,
    "retry". But EXEC ends the WATCH whatever happens, so there is nothing to UNWATCH (over a new
    connection, which a stalled Redis makes wait a socket timeout past the deadline); and an EXEC
    sent and not answered may have been applied: retried, a report without `host=` would count
    twice, so the error goes to the caller (503: retry). A refused EXEC still raises WatchError.
    """
    pipe.watching = False
    return await pipe.execute()


async def _drop(pipe: Pipeline) -> None:
    """Close a cut-off transaction's connection, with its WATCH and any reply still unread, before it goes back.

    Otherwise the pipeline's reset sends UNWATCH on it: over a connection redis-py closed mid-reply
    that means reconnecting, which a stalled Redis makes last a socket timeout past the deadline.
    """
    if pipe.connection is not None:
        await pipe.connection.disconnect(nowait=True)
    pipe.watching = False


async def watched(pipe: Pipeline, keys_: str | tuple[str, ...], *reads: tuple[str, ...]) -> list[Any]:
    """WATCH the key(s) `keys_` and send `reads` in one round trip on the transaction's connection; their replies.

    redis-py sends WATCH and every read after it as round trips of their own, and another
    worker's EXEC landing anywhere between our WATCH and our EXEC fails ours (a retry): one
    round trip instead of two or three makes that window about half as long. A pipeline that
    routes its WATCH itself (Redis Cluster's) keeps redis-py's way.
    """
    watching = (keys_,) if isinstance(keys_, str) else keys_
    if type(pipe).watch is not Pipeline.watch:
        await pipe.watch(*watching)
        return [await pipe.execute_command(*read) for read in reads]
    conn = pipe.connection
    if conn is None:
        conn = pipe.connection = await pipe.connection_pool.get_connection()
    commands = [("WATCH", *watching), *reads]
    replies: list[Any] = []
    try:
        await conn.send_packed_command(conn.pack_commands(commands))
        for command in commands:
            try:
                replies.append(await pipe.parse_response(conn, command[0]))  # WATCH's marks the pipeline watching
            except ResponseError as exc:
                replies.append(exc)  # read every reply all the same: none may stay unread on the connection
    except BaseException:
        await conn.disconnect(nowait=True)  # replies may be unread: the connection goes, its WATCH with it
        pipe.watching = False
        raise
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies[1:]


def _stored(state: str, entered: str | None) -> dict[str, str]:
    """The fields of a state hash that `decode_snapshot` needs for a snapshot, as `bulk.read_states` reads them."""
    return {keys.CURRENT_STATE: state, keys.ENTERED_AT: entered or ""}


def _refusal(chart: Chart, stored: Snapshot) -> StateServiceError | None:
    try:
        rules.carry_over(chart, stored)
    except StateServiceError as exc:
        return exc
    return None


async def _refused(step: Awaitable[None]) -> StateServiceError | None:
    try:
        await step
    except StateServiceError as exc:
        return exc
    return None


async def _caught(step: Awaitable[Snapshot]) -> Snapshot | StateServiceError:
    """The step's snapshot, or the StateServiceError it raised (Redis errors pass)."""
    try:
        return await step
    except StateServiceError as exc:
        return exc


def timed(advanced: tuple[Snapshot, list[Transition]]) -> tuple[Snapshot, list[Transition]]:
    """`rules.advance`'s answer with each time move's actor set to `time` (for the audit record)."""
    snap, moves = advanced
    return snap, [replace(move, actor="time") for move in moves]


class CatchUp(Exception):
    """More time moves are due than one transaction applies."""


def log_moves(moves: Sequence[Transition]) -> None:
    for move in moves:
        metrics.transition(move.chart, move.cause)
    if len(moves) > 10:
        first, last = moves[0], moves[-1]
        log.info(
            "chart_caught_up",
            chart=first.chart,
            moves=len(moves),
            from_state=first.from_state,
            to_state=last.to_state,
            first_due_at=codec.timestamp(first.due_at) if first.due_at else None,
            last_due_at=codec.timestamp(last.due_at) if last.due_at else None,
        )
        return
    for move in moves:
        log.info(
            "chart_transitioned",
            chart=move.chart,
            from_state=move.from_state,
            to_state=move.to_state,
            cause=move.cause,
            host=move.host,
            due_at=codec.timestamp(move.due_at) if move.due_at else None,
            actor=move.actor,
            remote=move.remote,
        )
