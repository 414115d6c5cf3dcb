"""What an entry of the events stream means: an `Event` to apply, or why it is none (`Rejected`).

Pure but for the store's types: no Redis here. The fields are those of keys.py (`dest`, or
`configuration` and `properties`; `event`, `event_id`, `originator`, `details`), checked by the
rules an event over HTTP follows; every problem of an entry is named, not only the first.
Fields arrive as Redis sent them (bytes): each is decoded here, so a field that is not UTF-8
makes its entry malformed instead of failing the read of every entry that came with it.
`stream.py` reads the entries, applies the events and dead-letters the rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson

from stateservice.core.machines import (
    EVENT,
    INSTANCE_ID,
    Invalid,
    check_properties,
    details_problem,
    event_id_problem,
    instance_id,
    originator_problem,
    parse_ref,
)
from stateservice.store import keys
from stateservice.store.machines import Event

MALFORMED = "malformed"
UNKNOWN_CONFIGURATION = "unknown_configuration"
APPLY_FAILED = "apply_failed"
# An event has far fewer fields; the bound keeps a dead letter small and the script's
# unpack of an event's fields (2 values each) within Lua's limits.
MAX_FIELDS = 64

Fields: TypeAlias = Mapping[bytes, bytes] | Mapping[str, str]


def text(value: bytes | str) -> str:
    """`value` as text; bytes that are not UTF-8 show as backslash escapes."""
    return value.decode(errors="backslashreplace") if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Rejected:
    """An entry that is no event: dead-lettered with `error` and `message`; its outcome kept when it names both ids."""

    entry: str
    error: str
    message: str
    fields: Fields  # as read (bytes or str): what the dead letter keeps
    instance: str | None = None
    event_id: str | None = None
    event: str | None = None

    def dead_letter(self) -> dict[bytes | str, bytes | str]:
        letter: dict[bytes | str, bytes | str]
        letter = {keys.DEAD_ERROR: self.error, keys.DEAD_MESSAGE: self.message, keys.DEAD_ENTRY: self.entry}
        if self.instance is not None:
            letter["instance"] = self.instance
        return {**letter, **{k: v for k, v in self.fields.items() if text(k) not in letter}}

    def outcome(self) -> dict[str, Any]:
        body = {"event_id": self.event_id, "outcome": self.error, "instance": self.instance, "message": self.message}
        if self.event is not None:
            body["event"] = self.event
        return body


@dataclass(slots=True)
class _Target:
    instance: str | None = None
    ref: str | None = None
    properties: dict[str, str] | None = None


def parse(entry: str, raw: Fields) -> Event | Rejected:
    """The Event an entry's fields describe, or why they describe none (Rejected, error `malformed`)."""
    problems: list[str] = []
    fields = _decoded(raw, problems)
    event = fields.get(keys.EVENT_NAME)
    if event is None:
        problems.append("event is required")
    elif not EVENT.fullmatch(event):
        problems.append(f"event {event!r} is not an event name: letters, digits, '.', '_', '-'")
    event_id: str | None = fields.get(keys.EVENT_ID, f"stream-{entry}")
    if (problem := event_id_problem(event_id)) is not None:
        problems.append(problem)
        event_id = None
    target = _target(fields, problems)
    originator = fields.get(keys.EVENT_ORIGINATOR)
    if originator is not None and (problem := originator_problem(originator)) is not None:
        problems.append(problem)
    details = _details(fields, problems)
    if problems or event is None or event_id is None:
        good_event = event if event is not None and EVENT.fullmatch(event) else None
        kept: Fields = raw
        if len(raw) > MAX_FIELDS:
            first: dict[Any, Any] = dict(list(raw.items())[:MAX_FIELDS])
            kept = first
        return Rejected(entry, MALFORMED, "; ".join(problems), kept, target.instance, event_id, good_event)
    return Event(
        event=event,
        event_id=event_id,
        instance=target.instance if target.ref is None else None,
        ref=target.ref,
        properties=target.properties,
        originator=originator,
        details=details,
        entry=entry,
        dead=[item for pair in fields.items() for item in pair],
    )


def _decoded(raw: Fields, problems: list[str]) -> dict[str, str]:
    """The fields as text; each one that is not UTF-8 is a problem (and shows escaped, for the messages)."""
    if len(raw) > MAX_FIELDS:
        problems.append(f"{len(raw)} fields: at most {MAX_FIELDS} (the dead letter keeps the first {MAX_FIELDS})")
    fields: dict[str, str] = {}
    for key, value in raw.items():
        try:
            name = key.decode() if isinstance(key, bytes) else key
        except UnicodeDecodeError:
            problems.append(f"field name {text(key)!r} is not UTF-8")
            continue
        try:
            fields[name] = value.decode() if isinstance(value, bytes) else value
        except UnicodeDecodeError:
            problems.append(f"{name} is not UTF-8")
            fields[name] = text(value)
    return fields


def _details(fields: Mapping[str, str], problems: list[str]) -> Any:
    if keys.EVENT_DETAILS not in fields:
        return None
    try:
        details = orjson.loads(fields[keys.EVENT_DETAILS])
    except orjson.JSONDecodeError:
        problems.append("details is not JSON text")
        return None
    if (problem := details_problem(orjson.dumps(details))) is not None:
        problems.append(problem)
    return details


def _target(fields: Mapping[str, str], problems: list[str]) -> _Target:
    """The instance the fields name: by `dest`, or by `configuration` and `properties` (its derived id)."""
    dest, ref = fields.get(keys.EVENT_DEST), fields.get(keys.EVENT_CONFIGURATION)
    if dest is not None:
        if ref is not None or keys.EVENT_PROPERTIES in fields:
            problems.append("give dest, or configuration and properties, not both")
        elif not INSTANCE_ID.fullmatch(dest):
            problems.append(f"dest {dest!r} is not an instance id")
        else:
            return _Target(instance=dest)
        return _Target()
    if ref is None:
        problems.append("dest, or configuration and properties, is required")
        return _Target()
    try:
        parse_ref(ref)
        value = orjson.loads(fields.get(keys.EVENT_PROPERTIES, ""))
    except Invalid as invalid:
        problems.append(f"configuration: {invalid}")
        return _Target()
    except orjson.JSONDecodeError:
        problems.append("properties is required with configuration: a JSON object of names to strings")
        return _Target()
    properties, findings = check_properties(value)
    if findings:
        problems.extend(str(f) for f in findings)
        return _Target()
    return _Target(instance_id(ref, properties), ref, properties)
