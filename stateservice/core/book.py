"""The instance store as plain memory: the reference model the Redis store is tested against.

Pure: no I/O, no clock. It keeps what the store keeps (each instance's configuration, state and
properties; counts per state; each instance's event outcomes) and applies events by the same
rules (`machines.step`, then the transition's requirement). The store must make each of these
steps atomic under concurrent workers; the book gets that by being one object in one thread,
which is what makes it an oracle.

Every outcome is kept by (instance id, event id), `unknown_instance` included: the same event
id for the same id always gets its first answer, so replaying any part of an event log changes
nothing. Ids given explicitly may not start with "p-", the prefix of ids derived from properties.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from stateservice.core.machines import (
    Configuration,
    Finding,
    Invalid,
    Requirement,
    check_id,
    check_properties,
    instance_id,
    step,
)
from stateservice.errors import InstanceExists, UnknownConfiguration, UnknownInstance

Target = str | tuple[str, Mapping[str, str]]  # an instance id, or (configuration ref, properties)


class Result(StrEnum):
    OK = "ok"
    TRANSITION_NOT_ALLOWED = "transition_not_allowed"
    REQUIREMENT_NOT_MET = "requirement_not_met"
    UNKNOWN_INSTANCE = "unknown_instance"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an event did: `source` is the state it found, `target` where its transition leads, `state` what is now."""

    event_id: str
    outcome: Result
    source: str | None = None
    target: str | None = None
    state: str | None = None
    duplicate: bool = False

    def document(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "outcome": self.outcome.value,
            "from": self.source,
            "to": self.target,
            "state": self.state,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    configuration: str  # "name:version"
    state: str
    properties: tuple[tuple[str, str], ...] = ()  # sorted; empty for an instance named by id


class Book:
    """Instances of `configurations` (keyed by "name:version"); `new_id` names those created without an id."""

    def __init__(self, configurations: Mapping[str, Configuration], new_id: Callable[[], str] | None = None) -> None:
        self.configurations = dict(configurations)
        numbers = itertools.count(1)
        self._new_id = new_id or (lambda: f"i-{next(numbers)}")
        self._instances: dict[str, Instance] = {}
        self._counts = {ref: dict.fromkeys(c.states, 0) for ref, c in self.configurations.items()}
        self._outcomes: dict[tuple[str, str], Outcome] = {}

    def configuration(self, ref: str) -> Configuration:
        """The configuration `ref` names. Raises UnknownConfiguration."""
        try:
            return self.configurations[ref]
        except KeyError:
            raise UnknownConfiguration(ref) from None

    def create(
        self, ref: str, instance_id: str | None = None, properties: Mapping[str, Any] | None = None
    ) -> tuple[str, bool]:
        """A new instance at the starting state: (id, True); for properties already named, (its id, False).

        Raises UnknownConfiguration, Invalid (a bad id or properties, or both given), InstanceExists (an explicit id).
        """
        configuration = self.configuration(ref)
        if properties is not None:
            if instance_id is not None:
                raise Invalid([Finding(("id",), "give an id or properties, not both")])
            ident, pairs = self._named(ref, properties)
            if ident in self._instances:
                return ident, False
        elif instance_id is not None:
            check_id(instance_id)
            if instance_id in self._instances:
                raise InstanceExists(instance_id, self._instances[instance_id].configuration)
            ident, pairs = instance_id, ()
        else:
            ident, pairs = self._fresh_id(), ()
        self._put(Instance(ident, ref, configuration.starting_state, pairs))
        return ident, True

    def apply(self, target: Target, event: str, event_id: str, chart_states: Mapping[str, str]) -> Outcome:
        """Apply `event` to `target` once per event id; chart guards read `chart_states` (chart name -> state).

        (ref, properties) creates the instance on first use; raises as `create` does.
        """
        ident = target if isinstance(target, str) else self.create(target[0], properties=target[1])[0]
        kept = self._outcomes.get((ident, event_id))
        if kept is not None:
            return replace(kept, duplicate=True)
        outcome = self._decide(ident, event, event_id, chart_states)
        self._outcomes[(ident, event_id)] = outcome
        return outcome

    def outcome(self, ident: str, event_id: str) -> Outcome | None:
        """The outcome kept for `event_id` on instance `ident`, as first answered."""
        return self._outcomes.get((ident, event_id))

    def state(self, ident: str) -> str:
        """The state of instance `ident`. Raises UnknownInstance."""
        return self.instance(ident).state

    def instance(self, ident: str) -> Instance:
        """Instance `ident`. Raises UnknownInstance."""
        try:
            return self._instances[ident]
        except KeyError:
            raise UnknownInstance(ident) from None

    def instances(self, ref: str | None = None) -> list[Instance]:
        """Every instance (of configuration `ref`), in creation order."""
        return [i for i in self._instances.values() if ref is None or i.configuration == ref]

    def counts(self, ref: str) -> dict[str, int]:
        """How many instances of `ref` are in each of its states, zeros too. Raises UnknownConfiguration."""
        self.configuration(ref)
        return dict(self._counts[ref])

    # -- inside --------------------------------------------------------------------------------

    def _decide(self, ident: str, event: str, event_id: str, chart_states: Mapping[str, str]) -> Outcome:
        instance = self._instances.get(ident)
        if instance is None:
            return Outcome(event_id, Result.UNKNOWN_INSTANCE)
        here = instance.state
        transition = step(self.configurations[instance.configuration], here, event)
        if transition is None:
            return Outcome(event_id, Result.TRANSITION_NOT_ALLOWED, here, None, here)
        if transition.requires is not None and not self._met(transition.requires, chart_states):
            return Outcome(event_id, Result.REQUIREMENT_NOT_MET, here, transition.target, here)
        self._put(replace(instance, state=transition.target))
        return Outcome(event_id, Result.OK, here, transition.target, transition.target)

    def _met(self, requirement: Requirement, chart_states: Mapping[str, str]) -> bool:
        if requirement.chart is not None:
            return chart_states.get(requirement.chart) == requirement.state
        other = self._instances.get(requirement.instance() or "")
        return other is not None and other.state == requirement.state

    def _named(self, ref: str, properties: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
        checked, findings = check_properties(properties)
        if findings:
            raise Invalid(findings)
        return instance_id(ref, checked), tuple(sorted(checked.items()))

    def _fresh_id(self) -> str:
        while True:
            ident = self._new_id()
            if ident not in self._instances:
                return ident

    def _put(self, instance: Instance) -> None:
        counts = self._counts[instance.configuration]
        before = self._instances.get(instance.id)
        if before is not None:
            counts[before.state] -= 1
        counts[instance.state] += 1
        self._instances[instance.id] = instance
