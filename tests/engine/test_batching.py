"""The Coalescer: one request per loop turn, in order, or split across several in flight."""

from __future__ import annotations

import asyncio

import pytest

from taskmaster.engine.batching import Coalescer


class Store:
    """Records each batch and how many were being sent at once."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.sending = 0
        self.most_at_once = 0
        self.release = asyncio.Event()

    async def send(self, batch: list[int]) -> list[int]:
        self.batches.append(batch)
        self.sending += 1
        self.most_at_once = max(self.most_at_once, self.sending)
        try:
            await self.release.wait()
            return [item * 10 for item in batch]
        finally:
            self.sending -= 1


async def test_one_in_flight_keeps_the_order_of_batches() -> None:
    store = Store()
    coalescer: Coalescer[int, int] = Coalescer(store.send, max_batch=4)
    first = [coalescer.add(i) for i in range(10)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [coalescer.add(i) for i in range(10, 13)]  # while the first batch is out
    store.release.set()
    assert await asyncio.gather(*first, *later) == [i * 10 for i in range(13)]
    assert store.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12]]
    assert store.most_at_once == 1


async def test_several_in_flight_share_one_turns_callers() -> None:
    store = Store()
    coalescer: Coalescer[int, int] = Coalescer(store.send, max_batch=500, in_flight=3)
    futures = [coalescer.add(i) for i in range(100)]
    while len(store.batches) < 3:
        await asyncio.sleep(0)
    assert [len(b) for b in store.batches] == [34, 33, 33]
    assert store.most_at_once == 3
    store.release.set()
    assert await asyncio.gather(*futures) == [i * 10 for i in range(100)]
    await coalescer.drain()


async def test_a_failed_batch_fails_only_its_callers() -> None:
    calls = 0

    async def send(batch: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("store gone")
        return batch

    coalescer: Coalescer[int, int] = Coalescer(send, max_batch=2)
    futures = [coalescer.add(i) for i in range(4)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert [type(r) for r in results[:2]] == [ConnectionError, ConnectionError]
    assert results[2:] == [2, 3]


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_drain_waits_for_everything_added(in_flight: int) -> None:
    store = Store()
    coalescer: Coalescer[int, int] = Coalescer(store.send, max_batch=3, in_flight=in_flight)
    futures = [coalescer.add(i) for i in range(7)]
    draining = asyncio.create_task(coalescer.drain())
    await asyncio.sleep(0.01)
    assert not draining.done()
    store.release.set()
    await asyncio.wait_for(draining, 5)
    assert all(f.done() for f in futures)


@pytest.mark.parametrize("in_flight", [1, 3])
async def test_an_item_added_as_the_last_flusher_stops_is_still_sent(in_flight: int) -> None:
    async def send(batch: list[int]) -> list[int]:
        return batch

    coalescer: Coalescer[int, int] = Coalescer(send, max_batch=10, in_flight=in_flight)
    answer = coalescer.add(0)
    for i in range(1, 20):
        assert await answer == i - 1
        # Added the moment the previous answer arrives, while that flusher is finishing.
        answer = coalescer.add(i)
    assert await asyncio.wait_for(answer, 2) == 19
