"""Instances' approvals over HTTP (issue #16): the instance side of `web/approvals.py`'s routes.

    GET  /continuations/{id}      an instance's continuation: instance, configuration, state, context, choices
    POST /continuations/{id}      resume it (approve or admin scope)
    GET  /approvals               lists the instances' pending continuations beside the charts'

`web/approvals.py` sends a continuation here when its id names an instance's (`owned`). A token
with a `charts` list may see and resume only instances of the configurations whose names it
lists, as for the other instance routes (`web/machines.py`, which uses this module for an
instance's `pending_approval`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from stateservice.core.machines import Configuration, Invalid, parse_ref
from stateservice.errors import CorruptState, ForbiddenConfiguration, InvalidName, UnknownContinuation
from stateservice.store import codec
from stateservice.store.approvals import choices_document
from stateservice.store.machine_approvals import MachineApprovals, Unreadable, Waiting
from stateservice.web import auth
from stateservice.web.appkeys import MACHINE_APPROVALS
from stateservice.web.handlers import who


def allow(request: web.Request, ref: str) -> None:
    """Raise ForbiddenConfiguration unless the caller's token may touch configuration `ref` (by its name)."""
    name = ref.partition(":")[0]
    if not auth.visible(request, name):
        raise ForbiddenConfiguration(auth.identity(request), auth.scope_of(request).value, name)


def _approvals(request: web.Request) -> MachineApprovals:
    return request.app[MACHINE_APPROVALS]


def document(waiting: Waiting, configuration: Configuration | None, context: dict[str, Any]) -> dict[str, Any]:
    """The JSON shape of an instance's continuation (GET /continuations/{id}, GET /approvals, the instance)."""
    approval = configuration.approval(waiting.state) if configuration is not None else None
    timeout = approval.timeout if approval is not None else None
    return {
        "id": waiting.id,
        "continuation_url": f"/continuations/{waiting.id}",
        "instance": waiting.instance,
        "configuration": waiting.configuration,
        "state": waiting.state,
        "status": waiting.status,
        "created_at": codec.timestamp(waiting.created_at),
        "expires_at": codec.timestamp(waiting.expires_at) if waiting.expires_at else None,
        "context": context,
        "choices": choices_document(approval) if approval is not None else [],
        "timeout": {"after": timeout.after.total_seconds(), "next": timeout.next} if timeout else None,
        "notified_at": codec.timestamp(waiting.notified_at) if waiting.notified_at else None,
        "notify_attempts": waiting.notify_attempts,
        **({"outcome": waiting.outcome} if waiting.outcome is not None else {}),
    }


async def owned(request: web.Request, continuation: str) -> bool:
    """Whether `continuation` is an instance's: its record is found by the id alone."""
    return await _approvals(request).owns(continuation)


async def get_continuation(request: web.Request, continuation: str) -> web.Response:
    approvals = _approvals(request)
    recorded = await approvals.record(continuation)
    if recorded is not None:
        allow(request, recorded.configuration)  # before find(), which may apply a due timeout: a write
    waiting, configuration, context = await approvals.find(continuation)
    return web.json_response(document(waiting, configuration, context))


async def resume(request: web.Request, continuation: str, given: dict[str, Any]) -> dict[str, Any]:
    """Resume an instance's continuation (after the token check): the outcome."""
    approvals = _approvals(request)
    waiting = await approvals.record(continuation)
    if waiting is not None:
        allow(request, waiting.configuration)
    caller = who(request)
    return await approvals.resume(continuation, given, caller.actor, caller.remote)


async def waiting(request: web.Request, ref: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The instances' pending continuations the caller may see (of configuration `ref` only, when given), and those
    that cannot be read ({instance, continuation, error, message}; the others are still listed). A record that
    cannot be read names no configuration: only a token bound to no charts is told of it."""
    approvals = _approvals(request)
    found = []
    pending_ones, broken = await approvals.waiting()
    if ref is not None or not auth.sees_all(request):
        broken = []  # a record that cannot be read names no configuration to filter or check the token by
    for pending in pending_ones:
        if (ref is not None and pending.configuration != ref) or not auth.visible(
            request, pending.configuration.partition(":")[0]
        ):
            continue
        try:
            _, configuration, context = await approvals.find(pending.id)
        except CorruptState as exc:  # the instance's context
            broken.append(Unreadable(pending.instance, pending.id, exc))
            continue
        except UnknownContinuation:  # resumed and forgotten since it was listed: waiting no longer
            continue
        found.append(document(pending, configuration, context))
    unreadable = [
        {"instance": i.instance, "continuation": i.continuation, "error": i.error.code, "message": i.error.message}
        for i in broken
    ]
    return found, unreadable


def configuration_filter(request: web.Request) -> str | None:
    """GET /approvals's `configuration=REF`, checked (400 malformed, 403 for a token not bound to it), or None."""
    if "configuration" not in request.query:
        return None
    ref = request.query["configuration"]
    try:
        parse_ref(ref)
    except Invalid as invalid:
        raise InvalidName(str(invalid), parameter="configuration") from None
    allow(request, ref)
    return ref


async def pending_approval(request: web.Request, instance: str) -> dict[str, Any] | None:
    """What GET /statemachines/{id} shows as `pending_approval`: the continuation it waits for, or None."""
    approvals = _approvals(request)
    pending = await approvals.pending(instance)
    if pending is None:
        return None
    _, configuration, context = await approvals.find(pending.id)
    return document(pending, configuration, context)
