"""`within`: the block's time is bounded; past it, StoreUnavailable; everything else passes through unchanged."""

from __future__ import annotations

import asyncio

import pytest

from stateservice.errors import StoreUnavailable
from stateservice.web.deadline import within


async def test_a_block_that_finishes_in_time_is_untouched() -> None:
    async with within(1.0):
        await asyncio.sleep(0.01)
        done = True

    assert done


async def test_a_block_past_its_deadline_is_cancelled_and_says_store_unavailable() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    cancelled = False

    with pytest.raises(StoreUnavailable) as raised:
        async with within(0.1):
            try:
                await asyncio.sleep(10)  # a Redis call that never answers
            except asyncio.CancelledError:
                cancelled = True
                raise

    assert cancelled
    assert 0.1 <= loop.time() - started < 0.5
    assert raised.value.status == 503
    assert raised.value.body()["error"] == "store_unavailable"
    assert raised.value.body()["deadline"] == 0.1
    assert "0.1s (--redis-deadline)" in raised.value.message


async def test_one_deadline_covers_every_call_in_the_block() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(StoreUnavailable):
        async with within(0.3):
            for _ in range(3):
                await asyncio.sleep(0.2)  # each in time on its own, not all three

    assert loop.time() - started < 0.5


async def test_a_timeout_of_the_blocks_own_and_other_errors_pass_unchanged() -> None:
    with pytest.raises(TimeoutError) as raised:
        async with within(5.0):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
    assert not isinstance(raised.value, StoreUnavailable)

    with pytest.raises(KeyError):
        async with within(5.0):
            raise KeyError("x")


async def test_a_cancelled_request_stays_cancelled() -> None:
    async def request() -> None:
        async with within(5.0):
            await asyncio.sleep(10)

    task = asyncio.create_task(request())
    await asyncio.sleep(0.01)
    task.cancel()  # the client went away: no 503 to answer

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_deadline_counts_from_redis_last_answer_so_a_queued_block_waits_while_redis_answers() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    heard = started

    async def redis_answers_others() -> None:  # other requests' work goes on for 0.6 s, then Redis stalls
        nonlocal heard
        while loop.time() - started < 0.6:
            await asyncio.sleep(0.05)
            heard = loop.time()

    others = asyncio.create_task(redis_answers_others())
    with pytest.raises(StoreUnavailable):
        async with within(0.3, lambda: heard):
            await asyncio.sleep(10)  # queued behind the others, then on a Redis that no longer answers

    took = loop.time() - started
    assert 0.6 + 0.3 - 0.06 <= took < 0.6 + 0.3 + 0.3, took  # 0.3 s after the last answer, not after the start
    assert others.done()


async def test_a_block_finishing_while_redis_answers_is_not_cut_off_at_the_deadline() -> None:
    loop = asyncio.get_running_loop()

    async with within(0.1, loop.time):  # Redis always "just answered"
        await asyncio.sleep(0.3)
