"""Rollout state in Redis: concurrency slots, failure reports, halts. Decided by `core`, written atomically.

Each operation is one WATCH/MULTI/EXEC transaction through `ChartStore`'s machinery (its lock,
retries and deadline handling), watching the chart's state hash and the state's slot and
failure hashes: two hosts racing for the last slot cannot both get it, on any number of
workers and machines, and two failures cannot both slip under a budget. Slots that passed
their ttl unrenewed are freed by the next operation on that state's slots, which records
each as expired (in the state's `expired` hash and the history, at the moment it expired).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import structlog
from redis.asyncio.client import Pipeline

from stateservice.core import rules, slots
from stateservice.core.chart import Chart, Snapshot, State, Transition
from stateservice.errors import NoConcurrency, NoFreeSlot, NotCurrent, NotReportable
from stateservice.store import codec, holding, keys
from stateservice.store.charts import CatchUp, ChartStore, execute, log_moves, timed, watched
from stateservice.telemetry import metrics

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Held:
    """A state's slots as `GET /charts/{chart}/slots` shows them."""

    state: str
    limit: int
    slots: list[slots.Slot]


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What `forget` removed from the current state's visit."""

    state: str
    report: bool
    failure: bool


@dataclass(frozen=True, slots=True)
class Who:
    """Who asked, for the history: a token name or certificate CN, and the caller's address."""

    actor: str | None = None
    remote: str | None = None


class Rollouts:
    """The rollout operations on the charts a ChartStore keeps."""

    def __init__(self, store: ChartStore) -> None:
        self.store = store

    async def acquire(self, chart: Chart, name: str, host: str, who: Who = Who()) -> slots.Granted:
        """Grant or renew `host`'s slot in state `name`. Raises NoFreeSlot, NoConcurrency, Halted, NotCurrent."""
        state = rules.lookup(chart, name)

        async def attempt(pipe: Pipeline) -> slots.Granted | slots.Full:
            now, snap, fields, holders, _ = await self._read(pipe, chart, state)
            rules.refuse_halted(chart, snap)
            if snap.state != name:
                raise NotCurrent(chart.name, name, snap.state)
            limit = _limit(chart, state)
            alive, gone = slots.expire(holders, now)
            answer = slots.acquire(alive, host, limit, state.rollout.slot_ttl, now, holding.mean(name, fields))
            if gone or isinstance(answer, slots.Granted):
                pipe.multi()
                self._expire(pipe, chart, name, gone)
                if isinstance(answer, slots.Granted):
                    pipe.hset(keys.chart_slots(chart.name, name), host, codec.encode_slot(answer.slot))
                    if not answer.renewed:  # a grant is history (who was at work when); a renewal is not
                        record = Transition(chart.name, name, name, "slot", now, host, None, who.actor, who.remote)
                        self.store.record(pipe, record)
                if gone or not (isinstance(answer, slots.Granted) and answer.renewed):  # a renewal shows nothing new
                    self.store.changed(pipe, chart.name, name)
                await execute(pipe)
            return answer

        answer = await self.transact(chart, "slot", attempt)
        if isinstance(answer, slots.Full):
            metrics.slots(chart.name, answer.held)
            metrics.slot_wait(chart.name)
            raise NoFreeSlot(chart.name, name, answer.held, answer.limit, answer.retry_after)
        metrics.slots(chart.name, len(answer.holders))
        return answer

    async def release(self, chart: Chart, name: str, host: str, who: Who | None = None) -> slots.Slot | None:
        """Free `host`'s slot in state `name` (None if it held none: idempotent), counting its hold time.

        With `who` (someone releasing it by hand: the host itself, or an operator freeing a dead host's
        slot) the release is recorded in the history (cause `release`).
        """
        state = rules.lookup(chart, name)
        _limit(chart, state)

        async def attempt(pipe: Pipeline) -> tuple[slots.Slot | None, int]:
            now, _, _, holders, _ = await self._read(pipe, chart, state)
            alive, gone = slots.expire(holders, now)
            rest, released = slots.release(alive, host)
            if gone or released:
                pipe.multi()
                self._expire(pipe, chart, name, gone)
                if released is not None:
                    pipe.hdel(keys.chart_slots(chart.name, name), host)
                    holding.observe(pipe, chart.name, name, now - released.granted_at)
                    if who is not None:
                        record = Transition(chart.name, name, name, "release", now, host, None, who.actor, who.remote)
                        self.store.record(pipe, record)
                self.store.changed(pipe, chart.name, name)
                await execute(pipe)
            return released, len(rest)

        released, held = await self.transact(chart, "release", attempt)
        metrics.slots(chart.name, held)
        return released

    async def held(self, chart: Chart, name: str | None = None) -> Held:
        """The unexpired slots of state `name` (default: the current state). Raises NoConcurrency."""
        state = rules.lookup(chart, name or (await self.store.advance(chart)).state)
        limit = _limit(chart, state)

        async def attempt(pipe: Pipeline) -> Held:
            now, _, _, holders, _ = await self._read(pipe, chart, state)
            alive, gone = slots.expire(holders, now)
            if gone:
                pipe.multi()
                self._expire(pipe, chart, state.name, gone)
                self.store.changed(pipe, chart.name, state.name)
                await execute(pipe)
            return Held(state.name, limit, sorted(alive.values(), key=lambda s: (s.granted_at, s.host)))

        held = await self.transact(chart, "slots", attempt)
        metrics.slots(chart.name, len(held.slots))
        return held

    async def fail(
        self, chart: Chart, name: str, host: str, reason: str | None = None, who: Who = Who()
    ) -> rules.Failure:
        """Record `host`'s failure of state `name` (once a visit), free its slot, and halt on an exhausted budget."""
        state = rules.lookup(chart, name)

        async def attempt(pipe: Pipeline) -> rules.Failure:
            now, snap, _, holders, failed = await self._read(pipe, chart, state, failed=True)
            failure = rules.fail(chart, snap, name, host, now, failed=failed, reason=reason)
            if not failure.recorded:
                return failure
            pipe.multi()
            pipe.hset(keys.chart_failed(chart.name, name), host, codec.encode_failure(now, reason))
            if host in holders:
                pipe.hdel(keys.chart_slots(chart.name, name), host)
            for record in failure.records:
                self.store.record(pipe, replace(record, actor=who.actor, remote=who.remote))
            if failure.snapshot is not None and failure.snapshot.halted is not None:
                self._halt(pipe, chart, failure.snapshot)
            self.store.changed(pipe, chart.name, name)
            await execute(pipe)
            return failure

        failure = await self.transact(chart, "failure", attempt)
        _log_events(list(failure.records))
        if failure.recorded:
            metrics.failure(chart.name)
        if failure.snapshot is not None and failure.snapshot.halted is not None:
            metrics.halted(chart.name, True)
        return failure

    async def halt(self, chart: Chart, reason: str, who: Who = Who()) -> Transition:
        """Halt the chart in its current state (an operator's stop). Halting a halted chart changes nothing."""

        async def attempt(pipe: Pipeline) -> Transition:
            now, snap = await self._snapshot(pipe, chart)
            record = Transition(
                chart.name, snap.state, snap.state, "halt", now, None, None, who.actor, who.remote, reason
            )
            if snap.halted is None:
                pipe.multi()
                self._halt(pipe, chart, replace(snap, halted=reason, halted_at=now))
                self.store.record(pipe, record)
                await execute(pipe)
            return record

        record = await self.transact(chart, "halt", attempt)
        _log_events([record])
        metrics.halted(chart.name, True)
        return record

    async def resume(self, chart: Chart, who: Who = Who()) -> Transition | None:
        """End a halt: gates, slots and reports work again (the failures stay counted). None if it was not halted."""

        async def attempt(pipe: Pipeline) -> Transition | None:
            now, snap = await self._snapshot(pipe, chart)
            if snap.halted is None:
                return None
            pipe.multi()
            pipe.hdel(keys.chart_state(chart.name), keys.HALTED, keys.HALTED_AT)
            record = Transition(
                chart.name, snap.state, snap.state, "resume", now, None, None, who.actor, who.remote, snap.halted
            )
            self.store.record(pipe, record)
            pipe.publish(keys.chart_channel(chart.name), snap.state)  # long-polls look again
            await execute(pipe)
            return record

        record = await self.transact(chart, "resume", attempt)
        if record is not None:
            _log_events([record])
        metrics.halted(chart.name, False)
        return record

    async def advance(self, chart: Chart, reason: str | None = None, who: Who = Who()) -> Transition:
        """Move the chart to its current state's target now (cause `operator`), whatever its counter or clock.

        Raises NotReportable on a final state and an approval state. Entering the next state ends a halt, as any
        move does.
        """

        async def attempt(pipe: Pipeline) -> Transition:
            now, snap = await self._snapshot(pipe, chart)
            state = rules.current(chart, snap)
            if state.approval is not None:  # which of its next states is a person's choice, not an operator's guess
                why = "waits for an approval, whose input picks the next state: resume it with `stateservice approve`"
                raise NotReportable(chart.name, state.name, why)
            if state.target is None:
                raise NotReportable(chart.name, state.name, "is final, so there is no next state to advance to")
            move = Transition(
                chart.name, state.name, state.target.name, "operator", now, None, None, who.actor, who.remote, reason
            )
            pipe.multi()
            self.store.write(pipe, chart, rules.enter(chart, state.target.name, now), [move])
            await execute(pipe)
            return move

        move = await self.transact(chart, "advance", attempt)
        log_moves([move])
        return move

    async def forget(self, chart: Chart, host: str, who: Who = Who()) -> Forgotten:
        """Forget `host`'s report and failure in the current state's visit: it may report again, counted anew."""

        async def attempt(pipe: Pipeline) -> Forgotten:
            now, snap = await self._snapshot(pipe, chart)
            key = keys.chart_state(chart.name)
            hosts, failed = keys.chart_hosts(chart.name, snap.state), keys.chart_failed(chart.name, snap.state)
            counted, failure = await watched(
                pipe, (hosts, failed), ("SISMEMBER", hosts, host), ("HEXISTS", failed, host)
            )
            forgotten = Forgotten(snap.state, bool(counted), bool(failure))
            if not (counted or failure):
                return forgotten
            what = " and ".join(w for w, done in (("report", counted), ("failure", failure)) if done)
            pipe.multi()
            if counted:
                pipe.srem(hosts, host)
                pipe.hincrby(key, keys.counter_field(snap.state), -1)
            if failure:
                pipe.hdel(failed, host)
            record = Transition(
                chart.name, snap.state, snap.state, "forget", now, host, None, who.actor, who.remote, what
            )
            self.store.record(pipe, record)
            self.store.changed(pipe, chart.name, snap.state)
            await execute(pipe)
            return forgotten

        forgotten = await self.transact(chart, "forget", attempt)
        return forgotten

    async def detail(self, chart: Chart, snap: Snapshot) -> dict[str, Any]:
        """What the chart view adds for the current state: failures, expired hosts, slots held (one round trip)."""
        name = snap.state
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.chart_failed(chart.name, name))
            pipe.hgetall(keys.chart_expired(chart.name, name))
            pipe.hkeys(keys.chart_slots(chart.name, name))
            failed, expired, held = await pipe.execute()
        return {
            "failures": codec.decode_failures(failed),
            "expired": [{"host": host, "at": at} for host, at in sorted(expired.items())],
            "slots_held": sorted(held),
        }

    # -- plumbing ------------------------------------------------------------------------

    async def transact(self, chart: Chart, what: str, attempt: Callable[[Pipeline], Awaitable[T]]) -> T:
        while True:
            try:
                return await self.store.transact(chart, what, attempt)
            except CatchUp:
                await self.store.advance(chart)

    async def _snapshot(self, pipe: Pipeline, chart: Chart) -> tuple[datetime, Snapshot]:
        """WATCH and read the chart's state hash; the time and a caught-up snapshot (raises CatchUp if behind)."""
        now = await self.store.clock()
        key = keys.chart_state(chart.name)
        [fields] = await watched(pipe, key, ("HGETALL", key))
        return now, _caught_up(chart, fields, now)

    async def _read(
        self, pipe: Pipeline, chart: Chart, state: State, *, failed: bool = False
    ) -> tuple[datetime, Snapshot, dict[str, str], dict[str, slots.Slot], set[str]]:
        """WATCH and read the state hash, `state`'s slots and (asked for) its failures, in one round trip.

        Returns the time, the snapshot, the state hash's fields, the slot holders and the failed hosts.
        """
        now = await self.store.clock()
        key, slots_key = keys.chart_state(chart.name), keys.chart_slots(chart.name, state.name)
        failed_key = keys.chart_failed(chart.name, state.name)
        watching = (key, slots_key, failed_key) if failed else (key, slots_key)
        reads = [("HGETALL", key), ("HGETALL", slots_key)] + ([("HKEYS", failed_key)] if failed else [])
        fields, raw, *rest = await watched(pipe, watching, *reads)
        snap = _caught_up(chart, fields, now)
        return now, snap, fields, codec.decode_slots(chart.name, state.name, raw), set(rest[0]) if rest else set()

    def _expire(self, pipe: Pipeline, chart: Chart, name: str, gone: list[slots.Slot]) -> None:
        """Queue the freeing of expired slots, each listed and recorded at the moment it expired."""
        for slot in gone:
            pipe.hdel(keys.chart_slots(chart.name, name), slot.host)
            pipe.hset(keys.chart_expired(chart.name, name), slot.host, codec.timestamp(slot.expires_at))
            record = Transition(chart.name, name, name, "slot_expired", slot.expires_at, slot.host, actor="time")
            self.store.record(pipe, record)

    def _halt(self, pipe: Pipeline, chart: Chart, snap: Snapshot) -> None:
        assert snap.halted is not None and snap.halted_at is not None
        fields = {keys.HALTED: snap.halted, keys.HALTED_AT: codec.timestamp(snap.halted_at)}
        pipe.hset(keys.chart_state(chart.name), mapping=fields)
        pipe.publish(keys.chart_channel(chart.name), snap.state)  # long-polls wake, and are told it halted


def _caught_up(chart: Chart, fields: dict[str, str], now: datetime) -> Snapshot:
    """The snapshot in a state hash just read. Raises CatchUp for a missing hash or a time move due: the store
    creates or moves the chart first (`Rollouts.transact`), then the operation reads again."""
    snap = codec.decode_snapshot(chart, fields)
    if snap is None or timed(rules.advance(chart, snap, now))[1]:
        raise CatchUp
    return snap


def _log_events(records: list[Transition]) -> None:
    """One log line per rollout event: a state's failure, halt or resume (not moves: no transition is counted)."""
    for record in records:
        log.info(
            "chart_event",
            chart=record.chart,
            state=record.to_state,
            cause=record.cause,
            host=record.host,
            reason=record.reason,
            actor=record.actor,
            remote=record.remote,
        )


def _limit(chart: Chart, state: State) -> int:
    if state.rollout.concurrency is None:
        raise NoConcurrency(chart.name, state.name)
    return state.rollout.concurrency
