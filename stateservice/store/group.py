"""Group commit: work for one key that arrives while the previous batch is in flight runs as one batch.

A hot chart's PUTs (and GETs) in one worker queue here; each batch is a single Redis
transaction (or read) whose results are handed back to every caller. Items that arrive
while a batch is in flight wait for the *next* batch, never join one already sent, so no
caller is answered from a read or decision made before it arrived. Before each read of its
transaction, above all the retry after another process wrote first, a batch takes in the
items queued meanwhile (`more`): they arrived before that read, so they can share it instead
of queueing behind it for a transaction of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")  # its result


class GroupCommit(Generic[I, R]):
    """`commit(items, more)` returns one result per item, in order: those given, then those `more()` returned.

    `more()` moves what has been queued since into the batch in flight (at most `max_batch`
    in all) and returns it; call it only before a read the results will be decided from.
    `pause()`, if given, says how many seconds to wait before the next batch while items are
    queued for it (they keep joining it meanwhile).
    """

    def __init__(
        self,
        commit: Callable[[list[I], Callable[[], list[I]]], Awaitable[Sequence[R]]],
        max_batch: int = 512,
        pause: Callable[[], float] | None = None,
    ) -> None:
        self._commit = commit
        self._pause = pause
        self.max_batch = max_batch
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._batch: list[tuple[I, asyncio.Future[R]]] = []  # in flight
        self._task: asyncio.Task[None] | None = None

    def submit(self, item: I) -> asyncio.Future[R]:
        """Queue `item` for the next batch; the future gives its result (or raises its exception).

        A plain function, not a coroutine: an awaiting handler resumes through one frame less.
        """
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return future

    def _more(self) -> list[I]:
        room = self.max_batch - len(self._batch)
        joined = self._queue[:room]
        del self._queue[:room]
        self._batch.extend(joined)  # the same list `_drain` answers
        return [item for item, _ in joined]

    async def _drain(self) -> None:
        while self._queue:
            batch = self._batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                results = await self._commit([item for item, _ in batch], self._more)
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                if not isinstance(exc, Exception):
                    self._fail_queued()
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # its caller may have gone away: the work is done all the same
                    future.set_result(result)
            if self._queue:
                # let the callers just answered run first: their replies are written before the next
                # batch's round trip instead of while it is in flight, where (for a transaction that
                # WATCHes) the time they take widens the window another process's write can fail it in
                await asyncio.sleep(0)
                wait = self._pause() if self._pause is not None else 0.0
                if wait > 0 and len(self._queue) < self.max_batch:
                    await asyncio.sleep(wait)

    def _fail_queued(self) -> None:
        for _, future in self._queue:
            if not future.done():
                future.cancel()
        self._queue.clear()

    async def close(self) -> None:
        """Stop draining (at shutdown): queued callers are cancelled."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_queued()
