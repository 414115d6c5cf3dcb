"""Group commit: work for one key that arrives while the previous batch is in flight runs as one batch.

A hot chart's PUTs (and GETs) in one worker queue here; each batch is a single Redis
transaction (or read) whose results are handed back to every caller. Items that arrive
while a batch is in flight wait for the *next* batch, never join one already sent, so no
caller is answered from a read or decision made before it arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")  # its result


class GroupCommit(Generic[I, R]):
    def __init__(self, commit: Callable[[list[I]], Awaitable[Sequence[R]]], max_batch: int = 512) -> None:
        self._commit = commit
        self.max_batch = max_batch
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: I) -> R:
        """Queue `item` for the next batch and wait for its result (or its exception)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                results = await self._commit([item for item, _ in batch])
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
