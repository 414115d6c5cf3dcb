"""MoveWatcher's read after a move: one for the waiters there before it was sent; the others read themselves."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import fakeredis.aioredis

from stateservice.core.chart import Snapshot
from stateservice.store.watch import MoveWatcher

MOVED = Snapshot("fleet", 0, datetime(2026, 11, 26, tzinfo=UTC))


class Reads:
    """A `read` for the watcher that answers when the test says so."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.answer: asyncio.Future[Snapshot | None] | None = None

    async def __call__(self, chart: str) -> Snapshot | None:
        self.calls.append(chart)
        self.answer = asyncio.get_running_loop().create_future()
        return await self.answer


async def waiting(watcher: MoveWatcher, chart: str, timeout: float = 10.0) -> asyncio.Task[Snapshot | None]:
    task = asyncio.create_task(watcher.wait(chart, timeout))
    await asyncio.sleep(0)  # registered
    return task


async def test_the_waiters_before_the_read_get_its_state_those_after_it_read_themselves() -> None:
    reads = Reads()
    watcher = MoveWatcher(fakeredis.aioredis.FakeRedis(), read=reads)
    before = [await waiting(watcher, "gate") for _ in range(3)]
    other = await waiting(watcher, "other")

    watcher.moved("gate")
    await asyncio.sleep(0)
    late = await waiting(watcher, "gate")  # began waiting while the read is in flight: it may have read before the move
    assert reads.calls == ["gate"] and reads.answer is not None
    reads.answer.set_result(MOVED)

    assert [await task for task in before] == [MOVED] * 3
    assert await asyncio.wait_for(late, 1.0) is None  # woken at once, to read for itself
    assert not other.done() and watcher.waiters == 1
    other.cancel()


async def test_a_failed_read_wakes_the_waiters_to_read_themselves() -> None:
    async def failing(chart: str) -> Snapshot | None:
        raise ConnectionError("Redis is gone")

    watcher = MoveWatcher(fakeredis.aioredis.FakeRedis(), read=failing)
    task = await waiting(watcher, "gate")
    watcher.moved("gate")
    assert await asyncio.wait_for(task, 1.0) is None


async def test_without_waiters_a_move_reads_nothing_and_a_timeout_or_a_wake_gives_none() -> None:
    reads = Reads()
    watcher = MoveWatcher(fakeredis.aioredis.FakeRedis(), read=reads)
    watcher.moved("gate")
    await asyncio.sleep(0)
    assert reads.calls == []

    assert await watcher.wait("gate", 0.01) is None
    task = await waiting(watcher, "gate")
    watcher.wake()
    assert await task is None and reads.calls == []


async def test_closing_cancels_a_read_in_flight_and_wakes_everyone() -> None:
    reads = Reads()
    watcher = MoveWatcher(fakeredis.aioredis.FakeRedis(), read=reads)
    task = await waiting(watcher, "gate")
    watcher.moved("gate")
    await asyncio.sleep(0)
    await watcher.close()
    assert await task is None and watcher.closing
    assert reads.answer is not None and reads.answer.cancelled()


async def test_a_listener_hears_moves_and_changes_of_its_charts_only_while_it_listens() -> None:
    redis = fakeredis.aioredis.FakeRedis(decode_responses=True)
    watcher = MoveWatcher(redis)
    watcher.start()
    try:
        listener = watcher.listen(["gate"])
        await asyncio.wait_for(watcher.hearing_changes.wait(), 3.0)  # subscribed once someone listens
        listener.changed.clear()
        await redis.publish("stateservice:{other}:changed", "a")
        await redis.publish("stateservice:{gate}:changed", "a")
        await asyncio.wait_for(listener.changed.wait(), 1.0)
        listener.changed.clear()
        await redis.publish("stateservice:{gate}:moves", "b")
        await asyncio.wait_for(listener.changed.wait(), 1.0)
        listener.changed.clear()
        await redis.publish("stateservice:{other}:moves", "b")
        await asyncio.sleep(0.2)
        assert not listener.changed.is_set()
        watcher.unlisten(listener)
        for _ in range(30):  # nobody listens: the changes' pattern is dropped
            if not watcher.hearing_changes.is_set():
                break
            await asyncio.sleep(0.1)
        assert not watcher.hearing_changes.is_set()
    finally:
        await watcher.close()
