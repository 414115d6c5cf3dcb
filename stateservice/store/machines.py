"""Configurations and instances in Redis: define, create, apply events exactly once, read, count.

The key layout is in `keys.py` (the {machines} section). An instance costs one field of the
instances hash ("REF STATE") and one member of its state's index set; properties, context and
history cost only the instances that have them. Events are applied by `machine_scripts.APPLY`,
a batch per round trip: HTTP events that arrive while a batch is in flight join the next one
(`GroupCommit`), as a chart's reports do.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from stateservice.core.approvals import Approval
from stateservice.core.machines import (
    Configuration,
    Invalid,
    canonical_properties,
    check_id,
    configuration_from,
    instance_id,
)
from stateservice.errors import (
    ConfigurationExists,
    InstanceExists,
    InvalidConfiguration,
    StartupError,
    UnknownConfiguration,
)
from stateservice.store import codec, keys
from stateservice.store.approvals import new_id
from stateservice.store.clock import Clock
from stateservice.store.group import GroupCommit
from stateservice.store.machine_scripts import APPLY, CREATE, DEFINE, FORGET
from stateservice.store.redis.replicated import ReplicatedRedis

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """One event to apply. `instance` names it by id; or `ref` and `properties` do (creating it on first use)."""

    event: str
    event_id: str
    instance: str | None = None
    ref: str | None = None
    properties: Mapping[str, str] | None = None
    originator: str | None = None
    details: Any = None
    entry: str | None = None  # the stream entry it came from: acknowledged with it
    dead: Sequence[str] = field(default=())  # the entry's fields, for the dead-letter stream

    def target(self) -> str:
        if self.instance is not None:
            return self.instance
        assert self.ref is not None and self.properties is not None
        return instance_id(self.ref, self.properties)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an event did: `body` as stored (event_id, outcome, instance, event, and from/to/at or state)."""

    body: dict[str, Any]
    duplicate: bool

    @property
    def ok(self) -> bool:
        return bool(self.body.get("outcome") == "ok")


class Machines:
    """One worker's access to the configurations and instances in one Redis."""

    def __init__(
        self,
        redis: Redis,
        clock: Clock,
        *,
        retention: float = 86400.0,
        history_limit: int = 100,
        cluster: bool = False,
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.retention_ms = int(retention * 1000)
        self.history_limit = history_limit
        self.cluster = cluster
        self._known: dict[str, Configuration] = {}  # configurations never change, so a copy stays right
        self._define = redis.register_script(DEFINE)
        self._create = redis.register_script(CREATE)
        self._forget = redis.register_script(FORGET)
        self._apply = redis.register_script(APPLY)
        self._group: GroupCommit[Event, Outcome] = GroupCommit(self._commit)

    # configurations

    async def define(self, configuration: Configuration) -> bool:
        """Store `configuration` unless its name:version exists: True if stored, False if it existed."""
        if self.cluster and any(t.requires and t.requires.chart for t in configuration.transitions):
            raise InvalidConfiguration(["a transition requiring a chart's state needs one Redis, not a Cluster"])
        document = orjson.dumps(configuration.document()).decode()
        table = [
            item
            for t in configuration.transitions
            for item in (f"{t.source} {t.event}", orjson.dumps(self._rule(configuration, t)).decode())
        ]
        stored = await self.run(
            self._define,
            keys=[keys.configurations(), keys.transitions(configuration.ref)],
            args=[configuration.ref, document, *table],
        )
        if stored:
            self._known[configuration.ref] = configuration
        return bool(stored)

    async def define_new(self, configuration: Configuration) -> None:
        """POST /configurations: store it, or raise ConfigurationExists."""
        if not await self.define(configuration):
            raise ConfigurationExists(configuration.ref)

    async def run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a writing script; with --redis-wait-replicas, as a transaction, which WAITs for the replicas
        (store/redis/replicated.py) before answering: an event acknowledged survives the master's loss."""
        if not isinstance(self.redis, ReplicatedRedis):
            return await script(keys=keys, args=args)
        async with self.redis.pipeline(transaction=True) as pipe:
            await script(keys=keys, args=args, client=pipe)
            return (await pipe.execute())[0]

    def _rule(self, configuration: Configuration, transition: Any) -> dict[str, Any]:
        rule: dict[str, Any] = {"to": transition.target}
        approval = waits(configuration.approval(transition.target))
        if approval is not None:
            rule["approval"] = approval
        requires = transition.requires
        if requires is None:
            return rule
        target = requires.instance()
        if target is None:
            return {
                **rule,
                "key": keys.chart_state(str(requires.chart)),
                "field": keys.CURRENT_STATE,
                "state": requires.state,
            }
        return {**rule, "key": keys.instances(), "field": target, "state": requires.state, "instance": True}

    async def configuration(self, ref: str) -> Configuration | None:
        known = self._known.get(ref)
        if known is None:
            raw = await self.redis.hget(keys.configurations(), ref)
            if raw is None:
                return None
            known = self._known[ref] = configuration_from(orjson.loads(raw))
        return known

    async def require(self, ref: str) -> Configuration:
        found = await self.configuration(ref)
        if found is None:
            raise UnknownConfiguration(ref)
        return found

    async def refs(self, name: str | None = None) -> list[str]:
        """Every configuration's NAME:VERSION (of `name` only, when given), sorted."""
        every = [str(r) for r in await self.redis.hkeys(keys.configurations())]
        return sorted(r for r in every if name is None or r.partition(":")[0] == name)

    # instances

    async def create(
        self, ref: str, instance: str | None = None, properties: Mapping[str, str] | None = None
    ) -> tuple[str, bool]:
        """Create an instance of `ref`: (its id, True) when made; (id, False) when properties named an existing one.

        Raises UnknownConfiguration; InstanceExists when an explicit id is taken.
        """
        configuration = await self.require(ref)
        if properties:
            instance = instance_id(ref, properties)
        elif instance is not None:
            _check_id(instance)
        else:
            instance = str(uuid.uuid4())
        made, record = await self.run(
            self._create,
            keys=[keys.instances()],
            args=[keys.MACHINES, instance, self._made(configuration, properties), *await self._times()],
        )
        if not made and not properties:
            raise InstanceExists(instance, str(record).partition(" ")[0])
        return instance, bool(made)

    async def create_many(self, ref: str, ids: Sequence[str] = (), properties: Sequence[Mapping[str, str]] = ()) -> int:
        """Create many instances in one pipelined round trip (each still its own atomic script): how many were new."""
        configuration = await self.require(ref)
        for instance in ids:
            _check_id(instance)
        wanted = [(i, self._made(configuration, None)) for i in ids]
        wanted += [(instance_id(ref, p), self._made(configuration, p)) for p in properties]
        times = await self._times()
        async with self.redis.pipeline(transaction=False) as pipe:
            for instance, made in wanted:
                await self._create(keys=[keys.instances()], args=[keys.MACHINES, instance, made, *times], client=pipe)
            results = await pipe.execute()
        return sum(1 for made, _ in results if made)

    def _made(self, configuration: Configuration, properties: Mapping[str, str] | None) -> str:
        """The CREATE script's JSON for an instance of `configuration` named by `properties` (or by an id)."""
        return orjson.dumps(self._creation(configuration, properties)).decode()

    def _creation(self, configuration: Configuration, properties: Mapping[str, str] | None) -> dict[str, Any]:
        made: dict[str, Any] = {"ref": configuration.ref, "start": configuration.starting_state}
        approval = waits(configuration.approval(configuration.starting_state))
        if approval is not None:  # it starts waiting: its continuation's id, used only if it is made
            made["approval"], made["cid"] = approval, new_id()
        if properties:
            made["properties"] = canonical_properties(properties)
            made["with"] = [keys.instances_with(configuration.ref, k, v) for k, v in sorted(properties.items())]
        return made

    async def instance(self, instance: str) -> dict[str, Any] | None:
        """`GET /statemachines/{id}`: id, configuration, state, properties, context, history (newest first)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(keys.instances(), instance)
            pipe.hget(keys.instance_properties(), instance)
            pipe.hget(keys.instance_context(), instance)
            pipe.lrange(keys.instance_history(instance), 0, self.history_limit - 1)
            record, properties, context, history = await pipe.execute()
        if record is None:
            return None
        ref, _, state = record.partition(" ")
        return {
            "id": instance,
            "configuration": ref,
            "state": state,
            "properties": orjson.loads(properties) if properties else {},
            "context": orjson.loads(context) if context else {},
            "history": [orjson.loads(h) for h in history],
        }

    async def delete(self, instance: str) -> tuple[str, str] | None:
        """Remove an instance, its indexes, count, properties, context and history: (configuration, state) it
        had, or None when there was none. Its kept outcomes expire with --event-retention (an event id sent
        again meanwhile still answers as a duplicate)."""
        record = await self.run(
            self._forget, keys=[keys.instances()], args=[keys.MACHINES, instance, *await self._times()]
        )
        if not record:
            return None
        ref, _, state = str(record).partition(" ")
        return ref, state

    async def state(self, instance: str) -> tuple[str, str] | None:
        """(configuration, state) of an instance, or None."""
        record = await self.redis.hget(keys.instances(), instance)
        if record is None:
            return None
        ref, _, state = str(record).partition(" ")
        return ref, state

    # events

    async def apply(self, event: Event) -> Outcome:
        """Apply one event (joining the next batch of this worker's events)."""
        return await self._group.submit(event)

    async def apply_all(self, events: Sequence[Event], stream: str = "", group: str = "") -> list[Outcome]:
        """Apply `events` in order, in one script: those with an `entry` are acknowledged on `stream` with them."""
        if not events:
            return []
        at = await self.clock()
        now = codec.timestamp(at)
        batch = [await self._encode(e, now) for e in events]
        reply = await self.run(
            self._apply,
            keys=[keys.instances()],
            args=[
                keys.MACHINES,
                now,
                self.retention_ms,
                self.history_limit,
                orjson.dumps(batch).decode(),
                stream or keys.events_stream(),
                group or keys.MACHINES_GROUP,
                keys.dead_letters(),
                epoch_ms(at),
            ],
        )
        return [Outcome(orjson.loads(text), bool(dup)) for text, dup in orjson.loads(reply)]

    async def _commit(self, events: list[Event], more: Any) -> list[Outcome]:
        return await self.apply_all([*events, *more()])

    async def _encode(self, event: Event, now: str) -> dict[str, Any]:
        history: dict[str, Any] = {"event_id": event.event_id, "event": event.event, "at": now}
        history["originator"] = event.originator
        if event.details is not None:
            history["details"] = event.details
        encoded: dict[str, Any] = {
            "id": event.target(),
            "event": event.event,
            "event_id": event.event_id,
            "history": orjson.dumps(history).decode(),
            "dead": list(event.dead),
            "cid": new_id(),  # the continuation's, if the event enters an approval state
        }
        if event.ref is not None and event.properties is not None:
            configuration = await self.configuration(event.ref)
            if configuration is not None:
                encoded["create"] = self._creation(configuration, event.properties)
        if event.entry is not None:
            encoded["entry"] = event.entry
        return encoded

    async def _times(self) -> tuple[str, int, int]:
        """Now as the scripts' `T` takes it: UTC ISO 8601, epoch ms, and the retention (ms)."""
        now = await self.clock()
        return codec.timestamp(now), epoch_ms(now), self.retention_ms

    async def outcome(self, instance: str, event_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(keys.event_outcome(instance, event_id))
        return None if raw is None else dict(orjson.loads(raw))

    # queries

    async def counts(self, configuration: Configuration) -> dict[str, int]:
        """Instances per state: one hash read, O(states)."""
        stored = await self.redis.hgetall(keys.instance_counts(configuration.ref))
        return {state: int(stored.get(state, 0)) for state in configuration.states}

    async def close(self) -> None:
        await self._group.close()


async def requirement_problems(
    machines: Machines, configuration: Configuration, also: Mapping[str, Configuration] | None = None
) -> list[str]:
    """What is wrong with the guards of `configuration` on other instances: each must name a configuration that
    is defined (or in `also`, defined beside it) and one of its states."""
    problems = []
    for i, transition in enumerate(configuration.transitions):
        requires = transition.requires
        if requires is None or requires.configuration is None:
            continue
        where, ref = f"transitions.{i}.requires", requires.configuration
        other = (
            configuration if ref == configuration.ref else (also or {}).get(ref) or await machines.configuration(ref)
        )
        if other is None:
            problems.append(f"{where}.configuration: no configuration {ref} is defined")
        elif requires.state not in other.states:
            problems.append(f"{where}.state: configuration {ref} has no state {requires.state!r}")
    return problems


async def define_file(
    machines: Machines, configuration: Configuration, also: Mapping[str, Configuration] | None = None
) -> None:
    """Define a configuration file's configuration: done if new or already defined alike. Raises StartupError
    when its NAME:VERSION is defined differently (a configuration never changes: the file needs a new version),
    when a guard names a configuration (or state) neither defined nor in `also`, or when Redis refuses it."""
    problems = await requirement_problems(machines, configuration, also)
    if problems:
        raise StartupError(f"configuration {configuration.ref}: " + "; ".join(problems))
    try:
        stored = await machines.define(configuration)
    except InvalidConfiguration as refused:
        raise StartupError(f"configuration {configuration.ref}: {refused.message}") from None
    if stored:
        log.info("configuration_defined", configuration=configuration.ref)
        return
    if await machines.configuration(configuration.ref) != configuration:
        raise StartupError(
            f"configuration {configuration.ref} is already defined differently in Redis; a configuration never "
            "changes: give the file a new version"
        )


def epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def waits(approval: Approval | None) -> dict[str, Any] | None:
    """An approval state as the scripts take it: {ttl: timeout in ms, notify: true}, each only if it has one."""
    if approval is None:
        return None
    found: dict[str, Any] = {}
    if approval.timeout is not None:
        found["ttl"] = int(approval.timeout.after.total_seconds() * 1000)
    if approval.notify is not None:
        found["notify"] = True
    return found


def _check_id(instance: str) -> None:
    """An explicit instance id (core.machines.check_id), its findings as an InvalidConfiguration."""
    try:
        check_id(instance)
    except Invalid as invalid:
        raise InvalidConfiguration([str(f) for f in invalid.findings]) from None


def check_configuration(data: Any) -> Configuration:
    """configuration_from, with its findings as an InvalidConfiguration (422)."""
    try:
        return configuration_from(data)
    except Invalid as invalid:
        raise InvalidConfiguration([str(f) for f in invalid.findings]) from None
