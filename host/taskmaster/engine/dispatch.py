"""Dispatcher: the one fetch loop of a worker process.

Job slots wait on the dispatcher, not on Redis: an idle slot holds no connection. The
loop claims, in one script call per queue, as many jobs as that queue has idle slots
(leasing them at once, so nothing fetched can look abandoned) and hands them over. When
the queues with idle slots are empty it blocks in BLPOP on their wake lists (pushed by
every enqueue and retry), bounded by the time until the next scheduled job is due.

A job recovered from a dead worker (a suspect) runs alone: the dispatcher lets its
running jobs finish, claims the suspect with nothing else, and claims more only after it
ends. If it kills the process again, no bystander is blamed for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from taskmaster.engine.queue import Claimed, TaskmasterQueue

logger = logging.getLogger(__name__)

IDLE_BLOCK_S = 1.0
"""Longest block on the wake lists; the floor of how often an idle worker looks."""
ERROR_BACKOFF_S = (0.1, 2.0)


@dataclass
class _Lane:
    queue: TaskmasterQueue
    waiting: deque[asyncio.Future[Claimed | None]] = field(default_factory=deque)

    def idle_slots(self) -> int:
        while self.waiting and self.waiting[0].done():
            self.waiting.popleft()
        return sum(1 for slot in self.waiting if not slot.done())

    def hand_over(self, claimed: Claimed) -> bool:
        while self.waiting:
            slot = self.waiting.popleft()
            if not slot.done():
                slot.set_result(claimed)
                return True
        return False


class Dispatcher:
    def __init__(self, redis: Redis, *, worker_id: str, lease_s: float) -> None:
        self.redis = redis
        self.worker_id = worker_id
        self.lease_ms = int(lease_s * 1000)
        self._lanes: dict[str, _Lane] = {}
        self._slot_waiting = asyncio.Event()
        self._closed = False
        self._blocking: asyncio.Task[object] | None = None
        self.running = 0
        self._isolating = False
        self._suspects_waiting = False

    def add(self, queue: TaskmasterQueue) -> None:
        self._lanes[queue.name] = _Lane(queue)

    async def next(self, queue_name: str) -> Claimed | None:
        """Wait for a claimed job of this queue; None once the dispatcher closes."""
        if self._closed:
            return None
        slot: asyncio.Future[Claimed | None] = asyncio.get_running_loop().create_future()
        self._lanes[queue_name].waiting.append(slot)
        self._slot_waiting.set()
        return await slot

    def finished(self, claimed: Claimed) -> None:
        """A slot is done with a job it was handed."""
        self.running -= 1
        if claimed.suspect:
            self._isolating = False
        self._slot_waiting.set()

    def close(self) -> None:
        """Stop fetching and release every waiting slot."""
        self._closed = True
        self._slot_waiting.set()
        for lane in self._lanes.values():
            while lane.waiting:
                slot = lane.waiting.popleft()
                if not slot.done():
                    slot.set_result(None)

    async def run(self) -> None:
        backoff = ERROR_BACKOFF_S[0]
        try:
            while not self._closed:
                try:
                    await self._round()
                    backoff = ERROR_BACKOFF_S[0]
                except RedisError as exc:
                    logger.warning("fetching jobs failed (%s); retrying in %.1fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, ERROR_BACKOFF_S[1])
        finally:
            if self._blocking is not None:
                self._blocking.cancel()
                with contextlib.suppress(asyncio.CancelledError, RedisError):
                    await self._blocking

    async def _round(self) -> None:
        hungry = [lane for lane in self._lanes.values() if lane.idle_slots()]
        waiting_for_quiet = self._isolating or (self._suspects_waiting and self.running > 0)
        if not hungry or waiting_for_quiet:
            self._slot_waiting.clear()
            await self._slot_waiting.wait()
            return
        self._slot_waiting.clear()
        drained: list[_Lane] = []
        next_due_ms: list[int] = []
        self._suspects_waiting = False
        for lane in hungry:
            wanted = lane.idle_slots()
            claim = await lane.queue.claim(wanted, self.lease_ms, self.worker_id,
                                           idle=self.running == 0)
            self._suspects_waiting |= claim.suspects > 0
            for job in claim.jobs:
                self._hand_over(lane, job)
            if self._isolating:
                return
            if len(claim.jobs) < wanted:
                drained.append(lane)
                if claim.wait_ms >= 0:
                    next_due_ms.append(claim.wait_ms)
        if len(drained) < len(hungry):
            return  # some queue has a backlog: claim again for slots as they free up
        timeout_s = min([IDLE_BLOCK_S, *(ms / 1000 for ms in next_due_ms)])
        await self._block([lane.queue.keys.wake for lane in drained], timeout_s)

    def _hand_over(self, lane: _Lane, job: Claimed) -> None:
        if not lane.hand_over(job):  # the slot went away (shutdown): let the lease lapse
            logger.info("no slot left for job %s; its lease will lapse", job.job.key)
            return
        self.running += 1
        if job.suspect:
            self._isolating = True

    async def _block(self, wake_keys: list[str], timeout_s: float) -> None:
        """Until a wake token, the timeout, or a newly idle slot — whichever comes first."""
        if timeout_s <= 0.001:
            return
        if self._blocking is None or self._blocking.done():
            self._blocking = asyncio.create_task(
                self.redis.blpop(wake_keys, timeout=timeout_s))  # type: ignore[arg-type]
        slot = asyncio.create_task(self._slot_waiting.wait())
        try:
            await asyncio.wait([self._blocking, slot], return_when=asyncio.FIRST_COMPLETED)
        finally:
            slot.cancel()
        if self._blocking.done():
            blocking, self._blocking = self._blocking, None
            blocking.result()  # surface a Redis error to run()'s backoff
