"""The approval webhook: the leader POSTs each suspension's continuation to its state's `notify` URL.

Only the leader sends, so two workers do not both notify. An attempt that gets no 2xx is tried
again after 1 s, 2 s, 4 s ... (at most 5 min apart) until one does or the continuation ends;
the attempts and their next time are kept on the continuation in Redis, so a new leader goes on
where the old one stopped. A leader that dies after the receiver answered but before it wrote
that down makes its successor send again: receivers get at least one, and the same
`continuation_url` tells them it is a repeat.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog
from redis.exceptions import RedisError

from stateservice.core.chart import Chart, Transition
from stateservice.errors import StateServiceError
from stateservice.store import codec, keys
from stateservice.store.approvals import Pending, note, reread
from stateservice.store.charts import ChartStore
from stateservice.store.machine_approvals import MachineApprovals, Waiting
from stateservice.telemetry import metrics

log = structlog.get_logger(__name__)

FIRST_RETRY = 1.0  # seconds
LONGEST_RETRY = 300.0
ATTEMPT_TIMEOUT = 5.0  # seconds a receiver has to answer one attempt


def backoff(attempts: int) -> timedelta:
    """How long after its `attempts`-th failed attempt the next one is due."""
    doublings = min(max(attempts - 1, 0), 20)  # 2**20 s is past the cap already; 2**1024 would not be a float
    return timedelta(seconds=min(FIRST_RETRY * 2**doublings, LONGEST_RETRY))


def body(chart: Chart, pending: Pending, base: str | None) -> dict[str, Any]:
    """What a receiver is sent: who waits, in which state, where to resume it, until when."""
    return about({"chart": chart.name}, pending.id, pending.state, pending.expires_at, base)


def about(owner: dict[str, str], id: str, state: str, expires_at: datetime | None, base: str | None) -> dict[str, Any]:
    """A notification's body; `owner` says who waits ({"chart": NAME} or {"instance": ID, "configuration": REF})."""
    path = f"/continuations/{id}"
    return {
        **owner,
        "state": state,
        "continuation_url": f"{base}{path}" if base else path,
        "expires_at": codec.timestamp(expires_at) if expires_at else None,
    }


def due(pending: Pending | Waiting, now: datetime) -> bool:
    """Whether `pending` is to be notified now: not yet delivered, still waiting, its retry time come."""
    if pending.notified_at is not None or pending.outcome is not None:
        return False
    if pending.notify_next_at is not None and pending.notify_next_at > now:
        return False
    return pending.expires_at is None or pending.expires_at > now


# keeps an attempt's bookkeeping: (fields of the continuation's record, the history's reason, when)
Note = Callable[[dict[str, str], str, datetime], Awaitable[object]]
# how many attempts were made, read again just before sending; None: none is due any more
Recount = Callable[[], Awaitable[int | None]]


class Notifier:
    """Sends due notifications in the background (a slow receiver never holds the leader's tick)."""

    def __init__(self, store: ChartStore, public_url: str | None = None, timeout: float = ATTEMPT_TIMEOUT) -> None:
        self.store = store
        self.public_url = public_url
        self.timeout = timeout
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def consider(self, chart: Chart, pending: Pending, now: datetime) -> None:
        """Send `pending`'s notification now if its state has a notify URL and one is due."""
        state = chart.state(pending.state)
        url = state.approval.notify if state is not None and state.approval is not None else None
        if url is None or pending.id in self._sending or not due(pending, now):
            return

        def record(fields: dict[str, str], reason: str, now: datetime) -> Awaitable[bool]:
            entry = Transition(chart.name, pending.state, pending.state, "notify", now, actor="leader", reason=reason)
            return note(self.store, chart.name, pending.id, fields, entry)

        async def recount() -> int | None:
            # `pending` may have been read before the previous attempt wrote its outcome down (a tick's
            # read and that attempt interleave): decided on it, a delivered notification went again
            fresh = await reread(self.store, chart.name, pending.id)
            return fresh.notify_attempts if fresh is not None and due(fresh, await self.store.clock()) else None

        payload = body(chart, pending, self.public_url)
        self.send(pending.id, url, payload, pending.notify_attempts, record, recount)

    def consider_instance(self, approvals: MachineApprovals, waiting: Waiting, url: str, now: datetime) -> None:
        """Send `waiting`'s notification to `url` (its approval state's) now if one is due: `consider` for instances."""
        if waiting.id in self._sending or not due(waiting, now):
            return

        async def recount() -> int | None:
            # as for charts: the tick's read may predate the previous attempt's bookkeeping
            fresh = await approvals.record(waiting.id)
            return fresh.notify_attempts if fresh is not None and due(fresh, await approvals.machines.clock()) else None

        owner = {"instance": waiting.instance, "configuration": waiting.configuration}
        payload = about(owner, waiting.id, waiting.state, waiting.expires_at, self.public_url)
        record = functools.partial(approvals.noted, waiting)
        self.send(waiting.id, url, payload, waiting.notify_attempts, record, recount)

    def send(
        self, id: str, url: str, payload: dict[str, Any], attempts: int, record: Note, recount: Recount | None = None
    ) -> None:
        """POST `payload` to `url` in the background unless continuation `id`'s is under way; `record` keeps what
        came of it (`attempts` were made before; `recount`, when given, says so again right before sending)."""
        if id in self._sending:
            return
        task = asyncio.create_task(self._attempt(id, url, payload, attempts, record, recount), name=f"notify {id[:6]}")
        self._sending[id] = task
        task.add_done_callback(lambda _: self._sending.pop(id, None))

    async def _attempt(
        self, id: str, url: str, payload: dict[str, Any], attempts: int, record: Note, recount: Recount | None
    ) -> None:
        try:
            if recount is not None:
                counted = await recount()
                if counted is None:
                    return
                attempts = counted
            await self._deliver(id, url, payload, attempts, record)
        except (RedisError, OSError) as exc:  # the next tick after Redis returns tries again
            log.warning("approval_notify_unrecorded", continuation=id, error=str(exc) or type(exc).__name__)
        except StateServiceError as exc:  # a record that cannot be read: the tick's own read says so too
            log.warning("approval_notify_unrecorded", continuation=id, error=exc.message)
        except Exception:  # a bug must not leave a task whose error nobody reads, nor stop the other sends
            log.exception("approval_notify_failed", continuation=id)

    async def _deliver(self, id: str, url: str, payload: dict[str, Any], attempts: int, record: Note) -> None:
        attempt = attempts + 1
        status, error = await self._post(url, payload)
        now = await self.store.clock()
        fields = {keys.NOTIFY_ATTEMPTS: str(attempt)}
        if status is not None and 200 <= status < 300:
            fields[keys.NOTIFIED_AT] = codec.timestamp(now)
            # never the URL: a webhook's often holds its secret, and history is readable with a read token
            reason = f"notified: HTTP {status} (attempt {attempt})"
            outcome = "delivered"
        else:
            retry = now + backoff(attempt)
            fields[keys.NOTIFY_NEXT_AT] = codec.timestamp(retry)
            why = f"HTTP {status}" if status is not None else error
            reason = f"notify failed: {why} (attempt {attempt}); next at {codec.timestamp(retry)}"
            outcome = "failed"
        metrics.notification(outcome)
        who = {k: v for k, v in payload.items() if k in ("chart", "instance")}
        log.info("approval_notify", **who, continuation=id, outcome=outcome, attempt=attempt)
        await record(fields, reason, now)

    async def _post(self, url: str, payload: dict[str, Any]) -> tuple[int | None, str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(url, json=payload, allow_redirects=False) as response:
                return response.status, ""
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            said = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return None, said.replace(url, "the notify URL")  # some errors quote the URL, and it may hold a secret

    async def drop(self) -> None:
        """Stop the sends in flight: this worker no longer leads, and the next leader sends."""
        for task in list(self._sending.values()):
            task.cancel()
        await asyncio.gather(*self._sending.values(), return_exceptions=True)

    async def close(self) -> None:
        await self.drop()
        if self._session is not None:
            await self._session.close()
