"""Continuations of instances' approval states in Redis: looked up by id, resumed once, timed out once.

An instance entering an approval state gets its continuation in the script that moves it
(`machine_scripts.py`, with the id Python generated); one leaving it by an event or a deletion
ends it there too. Here: a resume picks the next state in Python (`core.approvals.pick`) and
`SETTLE` moves the instance only if the continuation is still the one it waits for, unused, not
past its timeout, and the context unchanged since it was read (else it reads again), so each
continuation resumes or times out once whatever runs concurrently. The leader (`due`) times out
the continuations whose time has come and says which notifications are due.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import structlog
from redis.exceptions import WatchError

from stateservice.core.approvals import Approval, pick
from stateservice.core.machines import Configuration
from stateservice.errors import (
    ContextTooLarge,
    ContinuationExpired,
    ContinuationUsed,
    CorruptState,
    InvalidJSON,
    NoChoiceMatched,
    StateServiceError,
    StoreBusy,
    UnknownContinuation,
)
from stateservice.store import codec, keys
from stateservice.store.approvals import MAX_CONTEXT, choices_document, kept, new_id, status
from stateservice.store.machine_approval_scripts import SETTLE
from stateservice.store.machines import Machines, epoch_ms, waits

log = structlog.get_logger(__name__)

ATTEMPTS = 8  # reads again when the context changed between the read and the script
DUE_BATCH = 100  # timeouts and notifications the leader takes a tick


@dataclass(frozen=True, slots=True)
class Waiting:
    """An instance's continuation: the instance, its configuration and approval state, when made and expiring."""

    id: str
    instance: str
    configuration: str
    state: str
    created_at: datetime
    expires_at: datetime | None
    outcome: dict[str, Any] | None = None
    notify_attempts: int = 0
    notify_next_at: datetime | None = None
    notified_at: datetime | None = None

    @property
    def status(self) -> str:
        return status(self.outcome)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An instance whose continuation's record cannot be read, and why."""

    instance: str
    continuation: str
    error: StateServiceError


def decode(continuation: str, fields: dict[str, str]) -> Waiting:
    """A continuation's hash. Raises CorruptState naming the key."""
    try:
        instance, configuration = fields[keys.CONTINUATION_INSTANCE], fields[keys.CONTINUATION_CONFIGURATION]
        return Waiting(continuation, instance, configuration, **kept(fields))
    except (KeyError, ValueError) as exc:
        key = keys.instance_continuation(continuation)
        raise CorruptState(f"{key} cannot be read ({exc}); delete it with redis-cli DEL") from None


def context_of(raw: str | None) -> dict[str, Any]:
    """An instance's context. Raises CorruptState for one that is no JSON object (or no JSON)."""
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise CorruptState(f"{keys.instance_context()} holds a context that is not a JSON object")
    return value


def merge(context: str, given: dict[str, Any]) -> str:
    """`given` merged into the JSON text `context`, as JSON text. Raises ContextTooLarge or InvalidJSON."""
    try:
        merged = orjson.dumps({**context_of(context), **given})
    except orjson.JSONEncodeError:  # orjson reads 1,024 levels but writes 254
        raise InvalidJSON("the body nests too deeply: at most 200 levels of objects and arrays") from None
    if len(merged) > MAX_CONTEXT:  # UTF-8 bytes, as a chart's context is measured (store/approvals.py)
        raise ContextTooLarge(len(merged), MAX_CONTEXT)
    return merged.decode()


class MachineApprovals:
    """The continuations of the instances in one Redis (beside `Machines`, whose scripts make them)."""

    def __init__(self, machines: Machines) -> None:
        self.machines = machines
        self.redis: Any = machines.redis  # decodes replies to str, which redis-py's types do not know
        self._settle = machines.redis.register_script(SETTLE)

    async def owns(self, continuation: str) -> bool:
        """Whether `continuation` is an instance's (else it may be a chart's)."""
        return bool(await self.redis.exists(keys.instance_continuation(continuation)))

    async def record(self, continuation: str) -> Waiting | None:
        fields = await self.redis.hgetall(keys.instance_continuation(continuation))
        return decode(continuation, fields) if fields else None

    async def find(self, continuation: str) -> tuple[Waiting, Configuration | None, dict[str, Any]]:
        """The continuation (a due timeout applied first), its configuration and the instance's context.

        Raises UnknownContinuation."""
        waiting = await self._current(await self.record(continuation))
        if waiting is None:
            raise UnknownContinuation(continuation)
        context = context_of(await self.redis.hget(keys.instance_context(), waiting.instance))
        return waiting, await self.machines.configuration(waiting.configuration), context

    async def _current(self, waiting: Waiting | None) -> Waiting | None:
        """`waiting` as it is once a timeout that is due has been applied."""
        if waiting is None or waiting.outcome is not None or waiting.expires_at is None:
            return waiting
        if waiting.expires_at <= await self.machines.clock():
            await self.timeout(waiting.id)
            return await self.record(waiting.id)
        return waiting

    async def pending(self, instance: str) -> Waiting | None:
        """The continuation `instance` waits for now, or None."""
        continuation = await self.redis.hget(keys.instance_continuations(), instance)
        if continuation is None:
            return None
        waiting = await self._current(await self.record(continuation))
        return waiting if waiting is not None and waiting.outcome is None else None

    async def waiting(self) -> tuple[list[Waiting], list[Unreadable]]:
        """Every instance's pending continuation (O(instances waiting): two round trips), and the instances whose
        continuation's record cannot be read (the others are still listed)."""
        ids = list((await self.redis.hgetall(keys.instance_continuations())).items())
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, continuation in ids:
                pipe.hgetall(keys.instance_continuation(continuation))
            records = await pipe.execute()
        found, unreadable = [], []
        for (instance, continuation), fields in zip(ids, records, strict=True):
            try:
                waiting = await self._current(decode(continuation, fields)) if fields else None
            except CorruptState as exc:
                log.warning("approval_not_listed", instance=instance, continuation=continuation, error=exc.message)
                unreadable.append(Unreadable(instance, continuation, exc))
                continue
            if waiting is not None and waiting.outcome is None:
                found.append(waiting)
        return found, unreadable

    # -- resuming and timing out -----------------------------------------------------------

    async def resume(
        self, continuation: str, given: dict[str, Any], actor: str | None = None, remote: str | None = None
    ) -> dict[str, Any]:
        """Merge `given` into the instance's context and move it to the state `pick` chooses, once. The outcome.

        Raises UnknownContinuation, ContinuationUsed (with the first outcome), ContinuationExpired,
        NoChoiceMatched (nothing written: the continuation stays usable), ContextTooLarge or InvalidJSON.
        """
        for _ in range(ATTEMPTS):
            waiting = await self._current(await self.record(continuation))
            if waiting is None:
                raise UnknownContinuation(continuation)
            if waiting.outcome is not None:
                raise answered(continuation, waiting.outcome)
            configuration, approval = await self._approval(waiting)
            expected = await self.redis.hget(keys.instance_context(), waiting.instance) or ""
            merged = merge(expected, given)
            to = pick(approval, given)
            if to is None:
                raise NoChoiceMatched(continuation, waiting.state, choices_document(approval))
            now = codec.timestamp(await self.machines.clock())
            outcome = {
                "used": True,
                "instance": waiting.instance,
                "configuration": waiting.configuration,
                "from": waiting.state,
                "to": to,
                "at": now,
                "actor": actor,
                "input_keys": sorted(given),
            }
            history: dict[str, Any] = {"cause": "approval", "continuation": continuation, "originator": actor or "-"}
            history |= {"input_keys": sorted(given), **({"remote": remote} if remote else {})}
            spec = {"kind": "resume", "context": merged, "expected": expected}
            result, prior = await self._run(continuation, configuration, waiting, to, outcome, history, spec)
            if result == "answered":
                raise answered(continuation, prior)
            if result == "ok":
                log.info("instance_resumed", instance=waiting.instance, continuation=continuation, to=to)
                return outcome
            if result == "unknown":
                raise UnknownContinuation(continuation)
            # "late": _current times it out on the next read; "retry": the context changed meanwhile
        raise StoreBusy(f"instance {continuation}", ATTEMPTS)

    async def timeout(self, continuation: str) -> bool:
        """Move the instance waiting for `continuation` along its timeout, if it is due and still waits: True if
        this call did (whatever else runs, one does)."""
        waiting = await self.record(continuation)
        now = await self.machines.clock()
        if waiting is None or waiting.outcome is not None or waiting.expires_at is None:
            await self.redis.zrem(keys.approval_timeouts(), continuation)  # ended otherwise: nothing to time out
            return False
        if waiting.expires_at > now:
            return False
        configuration, approval = await self._approval(waiting)
        assert approval.timeout is not None  # an expiry is written only for an approval with a timeout
        to = approval.timeout.next
        outcome = {
            "used": False,
            "state": waiting.state,
            "reason": f"its timeout passed at {codec.timestamp(waiting.expires_at)}",
            "at": codec.timestamp(now),
            "current_state": to,
        }
        history = {"cause": "timeout", "continuation": continuation, "originator": "-"}
        # "answered": another worker timed it out (or it was resumed) since the read, which is no error here
        result, _ = await self._run(continuation, configuration, waiting, to, outcome, history, {"kind": "timeout"})
        if result == "ok":
            log.info("instance_timed_out", instance=waiting.instance, continuation=continuation, to=to)
        return result == "ok"

    async def _approval(self, waiting: Waiting) -> tuple[Configuration, Approval]:
        configuration = await self.machines.configuration(waiting.configuration)
        approval = configuration.approval(waiting.state) if configuration is not None else None
        if configuration is None or approval is None:
            raise CorruptState(
                f"{keys.instance_continuation(waiting.id)}: configuration {waiting.configuration} has no approval "
                f"state {waiting.state!r}"
            )
        return configuration, approval

    async def _run(
        self,
        continuation: str,
        configuration: Configuration,
        waiting: Waiting,
        to: str,
        outcome: dict[str, Any],
        history: dict[str, Any],
        spec: dict[str, Any],
    ) -> tuple[str, dict[str, Any]]:
        """SETTLE: "ok", "unknown", "late", "retry", or "answered" with the outcome recorded before."""
        now = await self.machines.clock()
        record = {"from": waiting.state, "to": to, "at": codec.timestamp(now), **history}
        spec |= {"state": waiting.state, "to": to, "history": json.dumps(record), "outcome": json.dumps(outcome)}
        approval = waits(configuration.approval(to))
        if approval is not None:
            spec |= {"approval": approval, "cid": new_id()}
        machines = self.machines
        args = [keys.MACHINES, continuation, codec.timestamp(now), epoch_ms(now), machines.retention_ms]
        reply = await machines.run(
            self._settle, keys=[keys.instances()], args=[*args, machines.history_limit, json.dumps(spec)]
        )
        kind = str(reply[0])
        return kind, json.loads(reply[1]) if kind == "answered" else {}

    # -- the leader ---------------------------------------------------------------------------

    async def due(self) -> list[Waiting]:
        """The leader's turn: time out what is due, and the continuations whose notification is due now."""
        now = epoch_ms(await self.machines.clock())
        for continuation in await self.redis.zrangebyscore(keys.approval_timeouts(), "-inf", now, 0, DUE_BATCH):
            try:
                await self.timeout(continuation)
            except StateServiceError as exc:  # one unreadable record must not hold up every other instance
                log.warning("instance_approval_not_checked", continuation=continuation, error=exc.message)
        found = []
        for continuation in await self.redis.zrangebyscore(keys.approval_notifications(), "-inf", now, 0, DUE_BATCH):
            try:
                waiting = await self.record(continuation)
            except StateServiceError as exc:
                log.warning("instance_approval_not_checked", continuation=continuation, error=exc.message)
                continue
            if waiting is None or waiting.outcome is not None or waiting.notified_at is not None:
                await self.redis.zrem(keys.approval_notifications(), continuation)
            else:
                found.append(waiting)
        return found

    async def noted(self, waiting: Waiting, fields: dict[str, str], reason: str, now: datetime) -> None:
        """Keep a notify attempt's bookkeeping on the continuation, its next time in the notify set and a history
        record; nothing once the instance no longer waits for it (resumed, timed out, moved on or deleted; the
        record gone), so that no half record, nor history of a deleted instance, is made again."""
        key = keys.instance_continuation(waiting.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            # every way out of the state writes the record's outcome, so watching the record is enough; `current`
            # also catches the instances' continuations hash edited by hand
            await pipe.watch(key)
            instance, outcome = await pipe.hmget(key, [keys.CONTINUATION_INSTANCE, keys.CONTINUATION_OUTCOME])
            current = await pipe.hget(keys.instance_continuations(), waiting.instance)
            if instance is None or outcome is not None or current != waiting.id:
                await pipe.unwatch()
                return
            pipe.multi()
            pipe.hset(key, mapping=fields)
            if keys.NOTIFY_NEXT_AT in fields:
                retry = codec.read_timestamp(fields[keys.NOTIFY_NEXT_AT])
                pipe.zadd(keys.approval_notifications(), {waiting.id: epoch_ms(retry)}, xx=True)
            else:
                pipe.zrem(keys.approval_notifications(), waiting.id)
            record = {"from": waiting.state, "to": waiting.state, "at": codec.timestamp(now), "cause": "notify"}
            history = keys.instance_history(waiting.instance)
            pipe.lpush(history, json.dumps({**record, "continuation": waiting.id, "reason": reason}))
            pipe.ltrim(history, 0, self.machines.history_limit - 1)
            try:
                await pipe.execute()
            except WatchError:  # used or ended meanwhile: the attempt no longer matters
                return


def answered(continuation: str, outcome: dict[str, Any]) -> ContinuationUsed | ContinuationExpired:
    if outcome.get("used"):
        return ContinuationUsed(continuation, outcome)
    return ContinuationExpired(continuation, str(outcome.get("reason")), outcome=outcome)
