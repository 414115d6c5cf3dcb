"""Chart state in Redis: read a snapshot, let `core.rules` decide, write the answer atomically.

Every write is one WATCH/MULTI/EXEC transaction over the chart's keys (counter, transition,
host set and history change together or not at all), retried a bounded number of times when
another worker wrote first. Within one process, writes to one chart also take a lock, so
that a hot chart's writers queue here instead of invalidating each other's transactions in
Redis; between processes WATCH alone keeps the counts exact.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from stateservice.core import rules
from stateservice.core.chart import Chart, Snapshot, Transition
from stateservice.errors import StoreBusy
from stateservice.store import codec, keys

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ChartView:
    """Everything `GET /charts/{chart}` shows: the snapshot, every state's counter, the hosts counted."""

    chart: Chart
    snapshot: Snapshot
    counters: dict[str, int]
    hosts: list[str]


class ChartStore:
    """The charts' live state in Redis. Holds no state of its own but locks and settings."""

    def __init__(
        self,
        redis: Redis,
        *,
        clock: Clock = utcnow,
        max_attempts: int = 64,
        history_length: int = 10_000,
        lock_timeout: float = 10.0,
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.max_attempts = max_attempts
        self.history_length = history_length
        self.lock_timeout = lock_timeout
        self._locks: dict[str, asyncio.Lock] = {}

    # -- reads ---------------------------------------------------------------------------

    async def snapshot(self, chart: Chart) -> Snapshot:
        """The chart's current snapshot (created at its initial state if Redis has none)."""
        fields = await self.redis.hgetall(keys.chart_state(chart.name))
        snap = codec.decode_snapshot(chart, fields)
        return snap if snap is not None else await self._create(chart)

    async def current_state(self, chart: Chart) -> Snapshot:
        """The snapshot for a gate check: one HGET round trip (counter left at 0)."""
        state = await self.redis.hget(keys.chart_state(chart.name), keys.CURRENT_STATE)
        if state is None:
            return await self._create(chart)
        return Snapshot(state, 0, datetime.fromtimestamp(0, UTC))

    async def view(self, chart: Chart) -> ChartView:
        fields = await self.redis.hgetall(keys.chart_state(chart.name))
        snap = codec.decode_snapshot(chart, fields)
        if snap is None:
            snap = await self._create(chart)
            fields = await self.redis.hgetall(keys.chart_state(chart.name))
        counters = {
            s.name: codec.read_counter(chart, fields, s.name, rules.start_count(s)) for s in chart.states if s.counter
        }
        hosts = sorted(await self.redis.smembers(keys.chart_hosts(chart.name, snap.state)))
        return ChartView(chart, snap, counters, hosts)

    async def history(self, chart: Chart, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` history records, newest first."""
        entries = await self.redis.xrevrange(keys.chart_history(chart.name), count=limit)
        return [codec.decode_history(entry_id, fields) for entry_id, fields in entries]

    # -- writes --------------------------------------------------------------------------

    async def report(self, chart: Chart, state: str, host: str | None = None) -> rules.Report:
        """Count one report of `state` (once per `host` and visit). Raises what `rules.report` raises."""
        key = keys.chart_state(chart.name)
        hosts_key = keys.chart_hosts(chart.name, state)

        async def attempt(pipe: Pipeline) -> rules.Report:
            await pipe.watch(key, hosts_key)
            fields = await pipe.hgetall(key)
            snap = codec.decode_snapshot(chart, fields)
            created = snap is None
            if snap is None:
                snap = rules.initial(chart, self.clock())
            seen = host is not None and bool(await pipe.sismember(hosts_key, host))
            result = rules.report(chart, snap, state, self.clock(), already_counted=seen, host=host)
            if not result.counted:
                return result
            pipe.multi()
            if created:
                pipe.hset(key, mapping=codec.initial_fields(chart, snap))
            if result.transition is None:
                pipe.hset(key, keys.counter_field(state), str(result.count))
                if host:
                    pipe.sadd(hosts_key, host)
            else:
                pipe.hset(
                    key,
                    mapping={**codec.encode_snapshot(result.snapshot), keys.counter_field(state): str(result.count)},
                )
                self._record(pipe, result.transition)
            await pipe.execute()
            return result

        result = await self._transact(chart, "report", attempt)
        if result.transition is not None:
            _log_transition(result.transition)
        return result

    async def reset(self, chart: Chart, host: str | None = None) -> Transition:
        """Put the chart back to its initial state, every counter at its start, and record it."""
        key = keys.chart_state(chart.name)

        async def attempt(pipe: Pipeline) -> Transition:
            await pipe.watch(key)
            previous = await pipe.hget(key, keys.CURRENT_STATE)
            prior = Snapshot(previous, 0, self.clock()) if previous else None
            snap, move = rules.reset(chart, prior, self.clock(), host)
            pipe.multi()
            pipe.delete(key, *(keys.chart_hosts(chart.name, s.name) for s in chart.states))
            pipe.hset(key, mapping=codec.initial_fields(chart, snap))
            self._record(pipe, move)
            self._define(pipe, chart)
            await pipe.execute()
            return move

        move = await self._transact(chart, "reset", attempt)
        _log_transition(move)
        return move

    async def register(self, chart: Chart) -> Snapshot:
        """Record that this chart is served: its definition, and its state when Redis has none.

        A changed chart file keeps the stored state and counter when that state still exists
        (the new rules apply from the next report). Raises rules.StateRemoved otherwise.
        """
        key = keys.chart_state(chart.name)
        definition = keys.chart_definition(chart.name)

        async def attempt(pipe: Pipeline) -> Snapshot:
            await pipe.watch(key, definition)
            snap = codec.decode_snapshot(chart, await pipe.hgetall(key))
            digest = await pipe.hget(definition, "digest")
            pipe.multi()
            if snap is None:
                snap = rules.initial(chart, self.clock())
                pipe.hset(key, mapping=codec.initial_fields(chart, snap))
            else:
                snap = rules.carry_over(chart, snap)
                if digest is not None and digest != chart.digest:
                    log.warning(
                        "chart_definition_changed",
                        chart=chart.name,
                        old_digest=digest,
                        new_digest=chart.digest,
                        current_state=snap.state,
                        count=snap.count,
                    )
            self._define(pipe, chart)
            await pipe.execute()
            return snap

        return await self._transact(chart, "register", attempt)

    async def registered(self) -> list[str]:
        return sorted(await self.redis.smembers(keys.charts_index()))

    async def definition(self, name: str) -> dict[str, str]:
        return dict(await self.redis.hgetall(keys.chart_definition(name)))

    # -- plumbing ------------------------------------------------------------------------

    async def _create(self, chart: Chart) -> Snapshot:
        """Create a missing state hash at the initial state (someone deleted it, or Redis lost it)."""
        key = keys.chart_state(chart.name)

        async def attempt(pipe: Pipeline) -> Snapshot:
            await pipe.watch(key)
            existing = codec.decode_snapshot(chart, await pipe.hgetall(key))
            if existing is not None:
                return existing
            snap = rules.initial(chart, self.clock())
            pipe.multi()
            pipe.hset(key, mapping=codec.initial_fields(chart, snap))
            await pipe.execute()
            log.warning("chart_state_created", chart=chart.name, state=snap.state, key=key)
            return snap

        return await self._transact(chart, "create", attempt)

    def _record(self, pipe: Pipeline, move: Transition) -> None:
        pipe.xadd(
            keys.chart_history(move.chart),
            codec.encode_transition(move),
            maxlen=self.history_length,
            approximate=True,
        )

    def _define(self, pipe: Pipeline, chart: Chart) -> None:
        pipe.hset(
            keys.chart_definition(chart.name),
            mapping={
                "path": chart.path,
                "digest": chart.digest,
                "source": chart.source,
                "registered_at": codec.timestamp(self.clock()),
            },
        )
        pipe.sadd(keys.charts_index(), chart.name)

    async def _transact(self, chart: Chart, what: str, attempt: Callable[[Pipeline], Awaitable[T]]) -> T:
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
                        return await attempt(pipe)
                    except WatchError:
                        # another worker wrote first: re-read, decide again (after a short, spread-out pause)
                        log.debug("transaction_retry", chart=chart.name, op=what, attempt=tries)
                        await asyncio.sleep(random.uniform(0, 0.001 * min(tries, 20)))
            log.warning("transaction_gave_up", chart=chart.name, op=what, attempts=self.max_attempts)
            raise StoreBusy(chart.name, self.max_attempts)
        finally:
            lock.release()


def _log_transition(move: Transition) -> None:
    log.info(
        "chart_transitioned",
        chart=move.chart,
        from_state=move.from_state,
        to_state=move.to_state,
        cause=move.cause,
        host=move.host,
    )
