"""The Redis key layout: the operators' reference, and the only place key names are built.

Every key starts with `stateservice:`. A chart's keys share the hash tag `{CHART}`, so in a
Redis Cluster they live in one slot and a chart's transaction touches one node.

======================================  ======  ===============================================
key                                     type    holds
======================================  ======  ===============================================
stateservice:charts                     set     names of the charts any service has registered
stateservice:leader                     string  the time-state leader's lease: JSON {id, pid, token},
                                                expiring after --lease-ttl unless renewed
stateservice:{CHART}                    hash    current_state, entered_at (UTC ISO 8601),
                                                counter:STATE (each state's counter);
                                                halted (the reason) and halted_at while
                                                halted; slot_hold_total:STATE and
                                                slot_hold_count:STATE (seconds slots of
                                                STATE were held, and how many: the mean
                                                estimates Retry-After); continuation (the
                                                id resuming the approval state it waits
                                                in) and context (JSON object merged from
                                                the resumes' inputs)
stateservice:{CHART}:hosts:STATE        set     hosts counted in the most recent visit of STATE
stateservice:{CHART}:slots:STATE        hash    concurrency slots held in STATE: host -> JSON
                                                {granted_at, expires_at} (UTC ISO 8601)
stateservice:{CHART}:failed:STATE       hash    failures in the most recent visit of STATE: host ->
                                                JSON {at, reason}
stateservice:{CHART}:expired:STATE      hash    hosts whose slot in STATE expired unrenewed in
                                                this visit: host -> when it expired
stateservice:{CHART}:history            stream  transitions and resets, newest last (capped):
                                                at, from, to, cause (put|time|reset|operator|
                                                slot|release|slot_expired|failure|halt|resume|
                                                forget), host, due_at (time
                                                moves: when it fell due), actor (token/CN, -
                                                or time), remote (address), reason
stateservice:{CHART}:definition         hash    path, digest (SHA-256), source (YAML text),
                                                registered_at, of the chart file last served
stateservice:{CHART}:moves              pubsub  channel (not a key): the new state, published
                                                by every transaction that moves the chart
                                                (and when an approval state's continuation
                                                is made)
stateservice:{CHART}:continuation:ID    hash    an approval's continuation: state, created_at,
                                                expires_at (empty: none); outcome (JSON, once
                                                used or expired); notify_attempts,
                                                notify_next_at, notified_at (the webhook's)
stateservice:continuation:ID            string  "chart NAME": whose continuation ID is (its
                                                own key, so a resume by id finds the chart)
stateservice:{CHART}:changed            pubsub  channel (not a key): the current state, published
                                                by a transaction that changes the chart without
                                                moving it (a report, a slot, a failure, a resume),
                                                while a dashboard listens (the key below)
stateservice:dashboard:watching         string  "1" while a live dashboard's event stream is
                                                open on some worker (expires 30 s after)
stateservice:dashboard:secret           string  random key signing the dashboard's session
                                                cookies and CSRF tokens (set once, kept)
======================================  ======  ===============================================

Workers keep no copy of any of these, so a repair made with redis-cli is seen by the next
request: `HSET 'stateservice:{CHART}' current_state STATE counter:STATE 0`.

Configurations and their instances (REF is NAME:VERSION) share the hash tag `{machines}`:

==================================================  ======  ===========================================
key                                                 type    holds
==================================================  ======  ===========================================
stateservice:{machines}:configurations              hash    REF -> the configuration's JSON document
stateservice:{machines}:transitions:REF             hash    "FROM EVENT" -> JSON {to} (+ key, field,
                                                            state, instance of a guard)
stateservice:{machines}:instances                   hash    instance id -> "REF STATE"
stateservice:{machines}:properties                  hash    instance id -> its properties (JSON)
stateservice:{machines}:context                     hash    instance id -> its context (JSON object)
stateservice:{machines}:counts:REF                  hash    STATE -> instances of REF in it
stateservice:{machines}:in:REF:STATE                set     ids of REF's instances in STATE
stateservice:{machines}:with:REF:NAME:VALUE         set     ids of REF's instances whose property NAME
                                                            is VALUE
stateservice:{machines}:history:INSTANCE            list    the instance's transitions, newest first
                                                            (JSON; --history-limit)
stateservice:{machines}:outcome:INSTANCE:EVENT_ID   string  an event's outcome (JSON), expiring after
                                                            --event-retention
stateservice:{machines}:events                      stream  events to apply (group `stateservice`)
stateservice:{machines}:events:dead                 stream  events that could not be applied, with the
                                                            error and the entry's fields
stateservice:{machines}:buried:ENTRY                string  "1" once ENTRY is dead-lettered by a consumer
                                                            (one letter per entry), expiring after
                                                            --event-retention
stateservice:{machines}:changes                     pubsub  channel: "ID FROM TO" per transition
stateservice:{machines}:continuation:CID            hash    an instance's approval continuation:
                                                            instance, configuration, state, created_at,
                                                            expires_at (empty: none); outcome (JSON,
                                                            once used or ended); notify_attempts,
                                                            notify_next_at, notified_at; kept while
                                                            the instance waits for it, then expires
                                                            --event-retention after its outcome
stateservice:{machines}:continuations               hash    instance id -> the continuation (CID) it waits
                                                            for (while in an approval state)
stateservice:{machines}:timeouts                    zset    continuation ids by their timeout (epoch ms)
stateservice:{machines}:notify                      zset    continuation ids whose notification is due,
                                                            by when (epoch ms)
==================================================  ======  ===========================================

An instance's continuation needs no `stateservice:continuation:ID` string: its record's key is
built from the id alone (the hash tag is fixed), so a resume finds it directly.
"""

from __future__ import annotations

PREFIX = "stateservice"

# fields of the state hash, stateservice:{CHART}
CURRENT_STATE = "current_state"
ENTERED_AT = "entered_at"
COUNTER_PREFIX = "counter:"  # + the state's name: see counter_field
HALTED = "halted"
HALTED_AT = "halted_at"
SLOT_HOLD_TOTAL_PREFIX = "slot_hold_total:"  # + the state's name: see slot_hold_total_field
SLOT_HOLD_COUNT_PREFIX = "slot_hold_count:"
CONTINUATION = "continuation"  # the approval state's continuation id, while the chart waits in one
CONTEXT = "context"  # JSON object: what resumes have merged in

# fields of a continuation's hash, stateservice:{CHART}:continuation:ID
CONTINUATION_STATE = "state"
CONTINUATION_CREATED_AT = "created_at"
CONTINUATION_EXPIRES_AT = "expires_at"
CONTINUATION_OUTCOME = "outcome"
NOTIFY_ATTEMPTS = "notify_attempts"
NOTIFY_NEXT_AT = "notify_next_at"
NOTIFIED_AT = "notified_at"

# fields an instance's continuation adds, stateservice:{machines}:continuation:ID
CONTINUATION_INSTANCE = "instance"
CONTINUATION_CONFIGURATION = "configuration"

# fields of the definition hash, stateservice:{CHART}:definition
DEFINITION_PATH = "path"
DEFINITION_DIGEST = "digest"
DEFINITION_SOURCE = "source"
DEFINITION_REGISTERED_AT = "registered_at"

# fields of each entry of the history stream, stateservice:{CHART}:history
HISTORY_AT = "at"
HISTORY_FROM = "from"
HISTORY_TO = "to"
HISTORY_CAUSE = "cause"
HISTORY_HOST = "host"
HISTORY_DUE_AT = "due_at"
HISTORY_ACTOR = "actor"
HISTORY_REMOTE = "remote"
HISTORY_REASON = "reason"


def charts_index() -> str:
    return f"{PREFIX}:charts"


def leader() -> str:
    return f"{PREFIX}:leader"


def chart_state(chart: str) -> str:
    return f"{PREFIX}:{{{chart}}}"


def chart_hosts(chart: str, state: str) -> str:
    return f"{PREFIX}:{{{chart}}}:hosts:{state}"


def chart_slots(chart: str, state: str) -> str:
    return f"{PREFIX}:{{{chart}}}:slots:{state}"


def chart_failed(chart: str, state: str) -> str:
    return f"{PREFIX}:{{{chart}}}:failed:{state}"


def chart_expired(chart: str, state: str) -> str:
    return f"{PREFIX}:{{{chart}}}:expired:{state}"


def visit_keys(chart: str, state: str) -> tuple[str, ...]:
    """The keys that hold one visit of a state: emptied when the state is entered or left."""
    return chart_hosts(chart, state), chart_slots(chart, state), chart_failed(chart, state), chart_expired(chart, state)


def chart_history(chart: str) -> str:
    return f"{PREFIX}:{{{chart}}}:history"


def chart_definition(chart: str) -> str:
    return f"{PREFIX}:{{{chart}}}:definition"


def chart_channel(chart: str) -> str:
    """The pub/sub channel on which every move of the chart is announced (the message is the new state)."""
    return f"{PREFIX}:{{{chart}}}:moves"


def chart_continuation(chart: str, id: str) -> str:
    return f"{PREFIX}:{{{chart}}}:continuation:{id}"


def continuation_owner(id: str) -> str:
    """String: "chart NAME" (or "instance ID"): a continuation id's owner, for resumes that name only the id."""
    return f"{PREFIX}:continuation:{id}"


def dashboard_watching() -> str:
    """String: "1" while a live dashboard's event stream is open on some worker (expires 30 s after the last)."""
    return f"{PREFIX}:dashboard:watching"


def chart_changes(chart: str) -> str:
    """The pub/sub channel announcing a change that moves nothing (a counted report, a slot, a failure, a resume).

    Not `...:moves`, so long-polls are not woken by it: only the live dashboard listens (`store/watch.py`)."""
    return f"{PREFIX}:{{{chart}}}:changed"


def dashboard_secret() -> str:
    """String: the key that signs the dashboard's session cookies and CSRF tokens, shared by every worker."""
    return f"{PREFIX}:dashboard:secret"


def counter_field(state: str) -> str:
    return f"{COUNTER_PREFIX}{state}"


def slot_hold_total_field(state: str) -> str:
    """The state hash's field summing the seconds slots of `state` were held."""
    return f"{SLOT_HOLD_TOTAL_PREFIX}{state}"


def slot_hold_count_field(state: str) -> str:
    """The state hash's field counting the slots of `state` released (the mean's divisor)."""
    return f"{SLOT_HOLD_COUNT_PREFIX}{state}"


# Configurations and their instances (issue #15). Every key shares the hash tag {machines}, so a
# Lua script applies an event to its instance, indexes, counts, outcome and stream in one slot
# (in a Redis Cluster all instances live on one node; charts still spread by their own tags).
MACHINES = f"{PREFIX}:{{machines}}"
MACHINES_GROUP = "stateservice"  # the consumer group of the events stream

# fields of each entry of the events stream (the input) and of the dead-letter stream
EVENT_DEST = "dest"
EVENT_CONFIGURATION = "configuration"
EVENT_PROPERTIES = "properties"
EVENT_NAME = "event"
EVENT_ID = "event_id"
EVENT_ORIGINATOR = "originator"
EVENT_DETAILS = "details"
DEAD_ERROR = "error"
DEAD_MESSAGE = "message"
DEAD_ENTRY = "entry"


def configurations() -> str:
    """Hash: NAME:VERSION -> the configuration's JSON document (written once, never changed)."""
    return f"{MACHINES}:configurations"


def transitions(ref: str) -> str:
    """Hash: "FROM EVENT" -> JSON {to, and for a guard: key, field, state, instance}; the rules of `ref`."""
    return f"{MACHINES}:transitions:{ref}"


def instances() -> str:
    """Hash: instance id -> "NAME:VERSION STATE"; the record of every instance."""
    return f"{MACHINES}:instances"


def instance_properties() -> str:
    """Hash: instance id -> its properties as JSON, keys sorted (instances named by properties only)."""
    return f"{MACHINES}:properties"


def instance_context() -> str:
    """Hash: instance id -> its context as a JSON object (absent while empty)."""
    return f"{MACHINES}:context"


def instance_counts(ref: str) -> str:
    """Hash: state -> how many instances of configuration `ref` are in it."""
    return f"{MACHINES}:counts:{ref}"


def instances_in(ref: str, state: str) -> str:
    """Set: ids of the instances of `ref` in `state`."""
    return f"{MACHINES}:in:{ref}:{state}"


def instances_with(ref: str, name: str, value: str) -> str:
    """Set: ids of the instances of `ref` whose property `name` is `value`."""
    return f"{MACHINES}:with:{ref}:{name}:{value}"


def instance_history(instance: str) -> str:
    """List: the instance's transitions as JSON, newest first, capped at --history-limit."""
    return f"{MACHINES}:history:{instance}"


def event_outcome(instance: str, event_id: str) -> str:
    """String: an event's outcome as JSON, expiring after --event-retention."""
    return f"{MACHINES}:outcome:{instance}:{event_id}"


def events_stream() -> str:
    """Stream: events to apply, read by the consumer group `stateservice` (one consumer per worker)."""
    return f"{MACHINES}:events"


def dead_letters() -> str:
    """Stream: the events of the events stream that could not be applied, with the error."""
    return f"{MACHINES}:events:dead"


def buried(entry: str) -> str:
    """String: set when a consumer dead-letters the events stream's `entry`, so a claimer does not again."""
    return f"{MACHINES}:buried:{entry}"


def machine_moves() -> str:
    """Pub/sub channel: "ID FROM TO" for every transition of an instance.

    Not `...:moves`: the chart watcher's pattern `stateservice:{*}:moves` would match it, and every
    worker would read every instance's transition."""
    return f"{MACHINES}:changes"


def instance_continuation(cid: str) -> str:
    """Hash: an instance's approval continuation (instance, configuration, state, created_at, expires_at, outcome,
    notify bookkeeping); found by its id alone."""
    return f"{MACHINES}:continuation:{cid}"


def instance_continuations() -> str:
    """Hash: instance id -> the continuation it waits for, while it is in an approval state."""
    return f"{MACHINES}:continuations"


def approval_timeouts() -> str:
    """Sorted set: instances' continuations by the epoch ms their approval state times out (the leader's)."""
    return f"{MACHINES}:timeouts"


def approval_notifications() -> str:
    """Sorted set: instances' continuations whose notification is due, by when (epoch ms; the leader's)."""
    return f"{MACHINES}:notify"
