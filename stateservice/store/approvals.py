"""Continuations of charts' approval states in Redis: made, looked up by id, resumed once, expired.

A chart entering an approval state writes only its snapshot (every write path stays as it was);
the continuation is made by the first reader that needs it (`ensure`: a view, a gate, the
leader within half a second) in a transaction that checks the visit has none yet, so each visit
gets exactly one. Its id is 128 random bits. The record lives in the chart's hash slot, so a
resume checks and moves in one WATCH/MULTI transaction; a string outside the slot names the
chart for a resume that brings only the id (written before the record, kept as long as it).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import orjson
import structlog
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from stateservice.core import rules
from stateservice.core.approvals import Approval
from stateservice.core.chart import Chart, Snapshot, Transition
from stateservice.errors import (
    ContextTooLarge,
    ContinuationExpired,
    ContinuationUsed,
    CorruptState,
    InvalidJSON,
    NoChoiceMatched,
    UnknownContinuation,
)
from stateservice.store import codec, keys
from stateservice.store.charts import ChartStore, execute, log_moves, timed
from stateservice.store.definitions import StoredCharts

log = structlog.get_logger(__name__)

MAX_CONTEXT = 64 * 1024  # bytes of a context as JSON: it is read with every view of the chart
ORPHAN_TTL = timedelta(days=1)  # an owner string whose transaction did not commit goes after this


def new_id() -> str:
    """128 random bits, URL-safe (22 characters of base64url), never starting with `-`: `stateservice approve ID`
    would take such an id for an option (one in 64 did; the bits lost are 0.02)."""
    while (made := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return made


@dataclass(frozen=True, slots=True)
class Pending:
    """A continuation: the chart and approval state it resumes, and when it was made and expires."""

    id: str
    chart: str
    state: str
    created_at: datetime
    expires_at: datetime | None
    outcome: dict[str, Any] | None = None  # once used or expired
    notify_attempts: int = 0
    notify_next_at: datetime | None = None
    notified_at: datetime | None = None

    @property
    def status(self) -> str:
        return status(self.outcome)

    def answers(self, state: str, expires: datetime | None) -> bool:
        """Whether this is the visit's continuation as `ensure` leaves it: pending, of `state`, expiring then."""
        return self.outcome is None and self.state == state and self.expires_at == expires


def expiry(approval: Approval, snap: Snapshot) -> datetime | None:
    """When the visit `snap` is in times out, as `approval` (the chart served now) says; None without a timeout."""
    return snap.entered_at + approval.timeout.after if approval.timeout else None


def status(outcome: dict[str, Any] | None) -> str:
    """A continuation's status (a chart's or an instance's) by its outcome: pending, used or expired."""
    if outcome is None:
        return "pending"
    return "used" if outcome.get("used") else "expired"


def kept(fields: dict[str, str]) -> dict[str, Any]:
    """What every continuation's hash holds (a chart's or an instance's): its state and times, outcome, and
    the notifications' bookkeeping, by field name. Raises KeyError or ValueError for one that cannot be read."""
    expires, outcome = fields.get(keys.CONTINUATION_EXPIRES_AT), fields.get(keys.CONTINUATION_OUTCOME)
    next_at, notified = fields.get(keys.NOTIFY_NEXT_AT), fields.get(keys.NOTIFIED_AT)
    return {
        "state": fields[keys.CONTINUATION_STATE],
        "created_at": codec.read_timestamp(fields[keys.CONTINUATION_CREATED_AT]),
        "expires_at": codec.read_timestamp(expires) if expires else None,
        "outcome": json.loads(outcome) if outcome else None,
        "notify_attempts": int(fields.get(keys.NOTIFY_ATTEMPTS) or 0),
        "notify_next_at": codec.read_timestamp(next_at) if next_at else None,
        "notified_at": codec.read_timestamp(notified) if notified else None,
    }


def choices_document(approval: Approval) -> list[dict[str, Any]]:
    """The choices as GET /continuations and a 422 show them."""
    found: list[dict[str, Any]] = [{"when": dict(c.when), "next": c.next} for c in approval.choices]
    if approval.default is not None:
        found.append({"default": approval.default})
    return found


def decode(continuation: str, chart: str, fields: dict[str, str]) -> Pending:
    """A continuation's hash. Raises CorruptState naming the field that cannot be read."""
    key = keys.chart_continuation(chart, continuation)
    try:
        return Pending(continuation, chart, **kept(fields))
    except (KeyError, ValueError) as exc:
        raise CorruptState(f"{key} cannot be read ({exc}); delete it with redis-cli DEL", chart=chart) from None


class Approvals:
    """The continuations of the charts this service serves (`charts`, by name, as reloads leave it)."""

    def __init__(self, store: ChartStore, charts: dict[str, Chart], retention: timedelta, zone: tzinfo = UTC) -> None:
        self.store = store
        self.charts = charts
        self.retention = retention
        self.stored = StoredCharts(store, zone)  # other services' charts

    # -- making and finding ---------------------------------------------------------------

    async def ensure(self, chart: Chart) -> tuple[Snapshot, Pending | None]:
        """The chart's snapshot after due moves, and the continuation of the approval state it waits in (made now
        if this visit has none, its record repaired if it is missing or was written under another timeout);
        None when it waits in none."""
        owner = new_id()
        made = await self.store.transact(chart, "suspend", lambda pipe: self._suspend(pipe, chart, owner))
        snap, moves, pending, written = made
        log_moves(moves)
        if written and pending is not None:
            await self._owned(pending)
            if pending.id == owner:
                log.info("approval_waiting", chart=chart.name, state=pending.state, continuation=pending.id)
        return snap, pending

    async def _suspend(
        self, pipe: Pipeline, chart: Chart, new: str
    ) -> tuple[Snapshot, list[Transition], Pending | None, bool]:
        """(snapshot, due moves, the visit's continuation, whether its record was written now)."""
        now = await self.store.clock()
        snap, created, _ = await self.store._read(pipe, chart, now)
        snap, moves = timed(rules.advance(chart, snap, now))
        state = rules.current(chart, snap)
        if state.approval is None:
            await self._commit(pipe, chart, snap, moves, created)
            return snap, moves, None, False
        expires = expiry(state.approval, snap)
        if snap.continuation is not None and not moves:
            fields = await pipe.hgetall(keys.chart_continuation(chart.name, snap.continuation))
            found = decode(snap.continuation, chart.name, fields) if fields else None
            # settled while the chart stayed (a reload made the state another kind, and another made it an approval
            # again): it answers 410 for ever, so the visit gets a new one below
            if found is None or found.outcome is None:
                return await self._repair(
                    pipe, chart, snap, found, Pending(snap.continuation, chart.name, snap.state, now, expires)
                )
        # the owner string first: the id must never be stored where a resume cannot find its chart
        await self.store.redis.set(keys.continuation_owner(new), f"chart {chart.name}", ex=ORPHAN_TTL)
        pending = Pending(new, chart.name, snap.state, now, expires)
        snap = replace(snap, continuation=new)
        pipe.multi()
        self.store.write(pipe, chart, snap, moves, created)
        pipe.hset(keys.chart_state(chart.name), keys.CONTINUATION, new)
        self._keep(pipe, pending)
        self.store.record(pipe, Transition(chart.name, snap.state, snap.state, "suspend", now, reason=new))
        pipe.publish(keys.chart_channel(chart.name), snap.state)
        await execute(pipe)
        return snap, moves, pending, True

    async def _repair(
        self, pipe: Pipeline, chart: Chart, snap: Snapshot, found: Pending | None, wanted: Pending
    ) -> tuple[Snapshot, list[Transition], Pending | None, bool]:
        """The visit's pending continuation `found` as `_suspend` returns it: made right first when it was lost, or
        written under a timeout a reload has changed (the same id, `wanted`'s state and expiry)."""
        if found is not None and found.answers(wanted.state, wanted.expires_at):
            return snap, [], found, False
        pending = replace(found, state=wanted.state, expires_at=wanted.expires_at) if found else wanted
        pipe.multi()
        self._keep(pipe, pending)
        await execute(pipe)
        log.warning("continuation_repaired", chart=chart.name, continuation=pending.id)
        return snap, [], pending, True

    def _keep(self, pipe: Pipeline, pending: Pending) -> None:
        """Queue the continuation's record, kept until its expiry and retention (without one, until settled)."""
        record = keys.chart_continuation(pending.chart, pending.id)
        pipe.hset(record, mapping=_record(pending))
        if pending.expires_at is not None:
            pipe.expireat(record, pending.expires_at + self.retention)
        else:
            pipe.persist(record)

    async def _commit(
        self, pipe: Pipeline, chart: Chart, snap: Snapshot, moves: list[Transition], created: bool
    ) -> None:
        if created or moves:
            pipe.multi()
            self.store.write(pipe, chart, snap, moves, created)
            await execute(pipe)

    async def _owned(self, pending: Pending) -> None:
        """Write the owner string to live as long as the record: until expiry and retention, or until settled."""
        key, value = keys.continuation_owner(pending.id), f"chart {pending.chart}"
        if pending.expires_at is None:
            await self.store.redis.set(key, value)
        else:
            await self.store.redis.set(key, value, exat=pending.expires_at + self.retention)
        # a resume that settled it meanwhile gave the owner string its retention before this SET took it away (read
        # after the SET: a resume settling later sets the retention itself, after its EXEC)
        record = keys.chart_continuation(pending.chart, pending.id)
        if await self.store.redis.hexists(record, keys.CONTINUATION_OUTCOME):
            await self.store.redis.expire(key, self.retention)

    async def own(self, pending: Pending) -> None:
        """Repair the owner string (the leader, for every pending one): missing, or left with the orphans' expiry
        by a worker stopped between its commit and `_owned`."""
        ttl = await self.store.redis.ttl(keys.continuation_owner(pending.id))
        if pending.expires_at is None:
            right = ttl == -1
        else:
            due = (pending.expires_at + self.retention - await self.store.clock()).total_seconds()
            right = ttl >= 0 and abs(ttl - due) < 60
        if not right:
            log.warning("continuation_owner_repaired", chart=pending.chart, continuation=pending.id, ttl=ttl)
            await self._owned(pending)

    async def owner(self, continuation: str) -> Chart:
        """The chart a continuation resumes: one this service serves, or another service's (sharing this Redis),
        as its stored definition says, so that any service's URL resumes it. Raises UnknownContinuation."""
        raw = await self.store.redis.get(keys.continuation_owner(continuation))
        kind, _, name = (raw or "").partition(" ")
        chart = (self.charts.get(name) or await self.stored.get(name)) if kind == "chart" else None
        if chart is None:
            raise UnknownContinuation(continuation)
        return chart

    async def find(self, chart: Chart, continuation: str) -> tuple[Pending, dict[str, Any]]:
        """The continuation of `chart` (see `owner`) and the chart's context. Raises UnknownContinuation."""
        _, waiting = await self.ensure(chart)  # applies a due timeout: a continuation past it reads as expired
        record, context = await self._fetch(chart, continuation)  # after: a resume meanwhile shows as used
        if not record:
            raise UnknownContinuation(continuation)
        pending = decode(continuation, chart.name, record)
        if pending.outcome is None and (waiting is None or waiting.id != continuation):
            pending = replace(pending, outcome=_left(pending, None, await self.store.clock()))
        elif waiting is not None and waiting.id == continuation and pending.outcome is None:
            pending = waiting  # its expiry as the chart served now has it
        return pending, context

    async def _fetch(self, chart: Chart, continuation: str) -> tuple[dict[str, str], dict[str, Any]]:
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.chart_continuation(chart.name, continuation))
            pipe.hget(keys.chart_state(chart.name), keys.CONTEXT)
            record, context = await pipe.execute()
        return record, parse_context(chart, context)

    async def context(self, chart: Chart) -> dict[str, Any]:
        return parse_context(chart, await self.store.redis.hget(keys.chart_state(chart.name), keys.CONTEXT))

    # -- resuming -------------------------------------------------------------------------

    async def resume(
        self, continuation: str, given: dict[str, Any], actor: str | None = None, remote: str | None = None
    ) -> dict[str, Any]:
        """Resume with `given`: merge it into the context and move to the chosen state, once. The outcome.

        Raises UnknownContinuation, ContinuationUsed (with the first outcome), ContinuationExpired, Halted,
        NoChoiceMatched (nothing written: the continuation stays usable) or ContextTooLarge.
        """
        chart = await self.owner(continuation)

        async def attempt(pipe: Pipeline) -> tuple[dict[str, Any], list[Transition]]:
            return await self._resume(pipe, chart, continuation, given, actor, remote)

        outcome, moves = await self.store.transact(chart, "resume", attempt)
        log_moves(moves)
        await self.store.redis.expire(keys.continuation_owner(continuation), self.retention)
        if not outcome.get("used"):
            raise ContinuationExpired(continuation, outcome["reason"], outcome=outcome)
        return outcome

    async def _resume(
        self,
        pipe: Pipeline,
        chart: Chart,
        continuation: str,
        given: dict[str, Any],
        actor: str | None,
        remote: str | None,
    ) -> tuple[dict[str, Any], list[Transition]]:
        now = await self.store.clock()
        record_key = keys.chart_continuation(chart.name, continuation)
        reads = (("HGETALL", record_key), ("HGET", keys.chart_state(chart.name), keys.CONTEXT))
        snap, created, (record, context) = await self.store._read(pipe, chart, now, *reads)
        if not record:
            raise UnknownContinuation(continuation)
        pending = decode(continuation, chart.name, _pairs(record))
        if pending.outcome is not None:
            raise _answered(continuation, pending.outcome)
        snap, moves = timed(rules.advance(chart, snap, now))
        if snap.continuation != continuation or rules.current(chart, snap).approval is None:
            # the visit ended (its timeout, a reset), or a reloaded chart file made the state another kind
            outcome = _left(pending, snap, now)
            await self._settle(pipe, chart, snap, moves, created, record_key, outcome)
            return outcome, moves
        rules.refuse_halted(chart, snap)
        merged = {**parse_context(chart, context), **given}
        try:
            stored = orjson.dumps(merged)
        except orjson.JSONEncodeError:  # orjson reads 1,024 levels but writes 254
            raise InvalidJSON("the body nests too deeply: at most 200 levels of objects and arrays") from None
        if len(stored) > MAX_CONTEXT:
            raise ContextTooLarge(len(stored), MAX_CONTEXT)
        decided = rules.resume(chart, snap, continuation, given, now, actor)
        if decided is None:
            approval = rules.current(chart, snap).approval
            assert approval is not None
            raise NoChoiceMatched(continuation, snap.state, choices_document(approval))
        after, move = decided
        move = replace(move, remote=remote)
        outcome = {
            "used": True,
            "chart": chart.name,
            "from": move.from_state,
            "to": move.to_state,
            "at": codec.timestamp(now),
            "actor": actor,
            "input_keys": sorted(given),
        }
        pipe.multi()
        self.store.write(pipe, chart, after, [move])
        pipe.hset(keys.chart_state(chart.name), keys.CONTEXT, stored)
        pipe.hset(record_key, keys.CONTINUATION_OUTCOME, json.dumps(outcome))
        pipe.expire(record_key, self.retention)
        await execute(pipe)
        return outcome, [move]

    async def _settle(
        self,
        pipe: Pipeline,
        chart: Chart,
        snap: Snapshot,
        moves: list[Transition],
        created: bool,
        record_key: str,
        outcome: dict[str, Any],
    ) -> None:
        """Record that a continuation's visit ended without it (with any due moves that ended it)."""
        pipe.multi()
        self.store.write(pipe, chart, snap, moves, created)
        pipe.hset(record_key, keys.CONTINUATION_OUTCOME, json.dumps(outcome))
        pipe.expire(record_key, self.retention)
        await execute(pipe)


def _record(pending: Pending) -> dict[str, str]:
    return {
        keys.CONTINUATION_STATE: pending.state,
        keys.CONTINUATION_CREATED_AT: codec.timestamp(pending.created_at),
        keys.CONTINUATION_EXPIRES_AT: codec.timestamp(pending.expires_at) if pending.expires_at else "",
    }


def _left(pending: Pending, snap: Snapshot | None, now: datetime) -> dict[str, Any]:
    """The outcome of a continuation whose visit ended without it."""
    expires = pending.expires_at
    if expires is not None and expires <= now:
        why = f"its timeout passed at {codec.timestamp(expires)}"
    else:
        why = f"the chart left state {pending.state!r}"
    outcome: dict[str, Any] = {"used": False, "state": pending.state, "reason": why, "at": codec.timestamp(now)}
    if snap is not None:
        outcome["current_state"] = snap.state
    return outcome


def _answered(continuation: str, outcome: dict[str, Any]) -> ContinuationUsed | ContinuationExpired:
    if outcome.get("used"):
        return ContinuationUsed(continuation, outcome)
    return ContinuationExpired(continuation, str(outcome.get("reason")), outcome=outcome)


def parse_context(chart: Chart, raw: str | None) -> dict[str, Any]:
    """The chart hash's `context` field as a JSON object. Raises CorruptState."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise CorruptState(
            f"{keys.chart_state(chart.name)} field {keys.CONTEXT} is not a JSON object; repair it with redis-cli HSET",
            chart=chart.name,
        )
    return value


def _pairs(record: Any) -> dict[str, str]:
    return dict(record) if isinstance(record, dict) else dict(zip(record[::2], record[1::2], strict=True))


async def reread(store: ChartStore, chart: str, continuation: str) -> Pending | None:
    """The continuation as Redis holds it now; None if its record is gone. Raises CorruptState."""
    fields = _pairs(await store.redis.hgetall(keys.chart_continuation(chart, continuation)))
    return decode(continuation, chart, fields) if fields else None


async def note(store: ChartStore, chart: str, continuation: str, fields: dict[str, str], record: Transition) -> bool:
    """Write a notify attempt's bookkeeping on a continuation and its history record; False if the record is gone
    (used and forgotten, or deleted), so that nothing makes a half record again."""
    key = keys.chart_continuation(chart, continuation)
    async with store.redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(key)
            if not await pipe.exists(key):
                await pipe.unwatch()
                return False
            pipe.multi()
            pipe.hset(key, mapping=fields)
            store.record(pipe, record)
            await pipe.execute()
        except WatchError:  # used or settled meanwhile: the attempt's outcome no longer matters
            return False
    return True
