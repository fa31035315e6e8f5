"""Coalescer: calls made in the same event-loop turn go to the store as one request.

A worker running 100 short jobs, or an API serving 32 clients, would otherwise pay one
socket write, one reply and one script invocation per call. With one batch in flight
(the default), batches go out in the order their items were added, so two changes of one
job never overtake each other. Independent calls (new submissions) may have several in
flight: the callers of one turn are then split between them, so the store applies one
batch while the caller builds the next, instead of the two taking turns.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    def __init__(self, send: Callable[[list[Item]], Awaitable[list[Result]]],
                 max_batch: int, *, in_flight: int = 1) -> None:
        self._send = send
        self.max_batch = max_batch
        self.in_flight = in_flight
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._running = 0
        """Flushers that may still take items (one that found nothing left has stopped,
        even if its task has not been reaped yet)."""
        self._starting = 0
        """Flushers that have not taken their first batch yet."""

    def add(self, item: Item) -> asyncio.Future[Result]:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running < self.in_flight:
            self._running += 1
            self._starting += 1
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return future

    def backlog(self) -> int:
        return len(self._pending)

    async def drain(self) -> None:
        """Until everything added so far has been sent."""
        while self._running:
            await asyncio.shield(asyncio.gather(*self._flushers))

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # let the other callers of this loop turn join the batch
            await self._send_pending()
        finally:
            # In the same step as the last look at `_pending`: an item added from here on
            # starts a flusher of its own.
            self._running -= 1

    async def _send_pending(self) -> None:
        # The flushers started in this turn share what it added.
        share = math.ceil(len(self._pending) / self._starting)
        self._starting -= 1
        while self._pending:
            size = min(self.max_batch, share)
            share = self.max_batch
            batch = self._pending[:size]
            del self._pending[:size]
            try:
                results = await self._send([item for item, _ in batch])
            except Exception as exc:  # the store failed: every caller learns it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
