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
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog
from redis.exceptions import RedisError

from stateservice.core.chart import Chart, Transition
from stateservice.store import codec, keys
from stateservice.store.approvals import Pending, note
from stateservice.store.charts import ChartStore
from stateservice.telemetry import metrics

log = structlog.get_logger(__name__)

FIRST_RETRY = 1.0  # seconds
LONGEST_RETRY = 300.0
ATTEMPT_TIMEOUT = 5.0  # seconds a receiver has to answer one attempt


def backoff(attempts: int) -> timedelta:
    """How long after its `attempts`-th failed attempt the next one is due."""
    return timedelta(seconds=min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY))


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


# keeps an attempt's bookkeeping: (fields of the continuation's record, the history's reason, when)
Note = Callable[[dict[str, str], str, datetime], Awaitable[object]]


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
        if url is None or pending.notified_at is not None or pending.outcome is not None or pending.id in self._sending:
            return
        if pending.notify_next_at is not None and pending.notify_next_at > now:
            return
        if pending.expires_at is not None and pending.expires_at <= now:
            return

        def record(fields: dict[str, str], reason: str, now: datetime) -> Awaitable[bool]:
            entry = Transition(chart.name, pending.state, pending.state, "notify", now, actor="leader", reason=reason)
            return note(self.store, chart.name, pending.id, fields, entry)

        self.send(pending.id, url, body(chart, pending, self.public_url), pending.notify_attempts, record)

    def send(self, id: str, url: str, payload: dict[str, Any], attempts: int, record: Note) -> None:
        """POST `payload` to `url` in the background unless continuation `id`'s is under way; `record` keeps what
        came of it (`attempts` were made before)."""
        if id in self._sending:
            return
        task = asyncio.create_task(self._attempt(id, url, payload, attempts, record), name=f"notify {id[:6]}")
        self._sending[id] = task
        task.add_done_callback(lambda _: self._sending.pop(id, None))

    async def _attempt(self, id: str, url: str, payload: dict[str, Any], attempts: int, record: Note) -> None:
        try:
            await self._deliver(id, url, payload, attempts, record)
        except (RedisError, OSError) as exc:  # the next tick after Redis returns tries again
            log.warning("approval_notify_unrecorded", continuation=id, error=str(exc) or type(exc).__name__)

    async def _deliver(self, id: str, url: str, payload: dict[str, Any], attempts: int, record: Note) -> None:
        attempt = attempts + 1
        status, error = await self._post(url, payload)
        now = await self.store.clock()
        fields = {keys.NOTIFY_ATTEMPTS: str(attempt)}
        if status is not None and 200 <= status < 300:
            fields[keys.NOTIFIED_AT] = codec.timestamp(now)
            reason = f"notified {url}: HTTP {status} (attempt {attempt})"
            outcome = "delivered"
        else:
            retry = now + backoff(attempt)
            fields[keys.NOTIFY_NEXT_AT] = codec.timestamp(retry)
            why = f"HTTP {status}" if status is not None else error
            reason = f"notify {url} failed: {why} (attempt {attempt}); next at {codec.timestamp(retry)}"
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
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def close(self) -> None:
        for task in list(self._sending.values()):
            task.cancel()
        await asyncio.gather(*self._sending.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
