"""Coalescer: calls made in the same event-loop turn go to the store as one request.

A worker running 100 short jobs, or an API serving 32 clients, would otherwise pay one
socket write, one reply and one script invocation per call. Batches go out one at a
time and in the order their items were added, so two changes of one job never overtake
each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    def __init__(self, send: Callable[[list[Item]], Awaitable[list[Result]]],
                 max_batch: int) -> None:
        self._send = send
        self.max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushing: asyncio.Task[None] | None = None

    def add(self, item: Item) -> asyncio.Future[Result]:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return future

    def backlog(self) -> int:
        return len(self._pending)

    async def drain(self) -> None:
        """Until everything added so far has been sent."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the other callers of this loop turn join the batch
        while self._pending:
            batch = self._pending[:self.max_batch]
            del self._pending[:self.max_batch]
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
