"""Dispatcher: the one fetch loop of a worker process.

Job slots wait on the dispatcher, not on Redis: an idle slot holds no connection. The
loop claims, in one script call per queue, as many jobs as that queue has idle slots
(leasing them at once, so nothing fetched can look abandoned) and hands them over. A
queue found empty gets a block: a BLPOP on its wake list (pushed by every enqueue and
retry), bounded by the time until its next scheduled job is due, with the next claim
pipelined behind it, so a job submitted to an idle worker costs it one round trip. While
a queue's block is out, nothing else claims for it: its claim cannot overfill the slots.

A job recovered from a dead worker (a suspect) runs alone: the dispatcher lets its
running jobs finish, claims the suspect with nothing else, and claims more only after it
ends. If it kills the process again, no bystander is blamed for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from taskmaster.engine.queue import Claim, Claimed, TaskmasterQueue

logger = logging.getLogger(__name__)

IDLE_BLOCK_S = 1.0
"""Longest block on the wake lists; the floor of how often an idle worker looks."""
BLOCK_END_S = 2.0
"""At shutdown, how long a woken block may take to bring its claim home."""
ERROR_BACKOFF_S = (0.1, 2.0)


@dataclass
class _Lane:
    queue: TaskmasterQueue
    waiting: deque[asyncio.Future[Claimed | None]] = field(default_factory=deque)
    block: asyncio.Task[Claim] | None = None
    block_wanted: int = 0

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
        self.running = 0
        self._isolating = False
        self._suspects_waiting = False
        self._given_back: list[asyncio.Future[int]] = []

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
            await self._end_blocks()
            await asyncio.gather(*self._given_back, return_exceptions=True)

    async def _end_blocks(self) -> None:
        """Wake every block and give back what its claim took. Cancelling one instead
        would lose a claim the store already ran (its reply still unread): those jobs would
        stay leased to nobody until the lease lapsed, and count a stall. (Another worker
        blocked on the same list may take the token; ours then ends within IDLE_BLOCK_S.)"""
        lanes = [lane for lane in self._lanes.values() if lane.block is not None]
        if not lanes:
            return
        try:
            for lane in lanes:
                await self.redis.lpush(lane.queue.keys.wake, 1)  # type: ignore[misc]
        except RedisError as exc:
            logger.warning("could not wake the fetch loop's blocks (%s)", exc)
        blocks = [lane.block for lane in lanes if lane.block is not None]
        await asyncio.wait(blocks, timeout=BLOCK_END_S)
        for block in blocks:
            block.cancel()  # still blocked: the server never ran its claim, or is gone
        await asyncio.gather(*blocks, return_exceptions=True)  # a block hands over its claim
        for lane in lanes:
            lane.block = None

    async def _round(self) -> None:
        self._collect_blocks()
        hungry = [lane for lane in self._lanes.values()
                  if lane.block is None and lane.idle_slots()]
        waiting_for_quiet = self._isolating or (self._suspects_waiting and self.running > 0)
        self._slot_waiting.clear()
        if not hungry or waiting_for_quiet:
            await self._slot_waiting.wait()
            return
        self._suspects_waiting = False
        blocks = 0
        for lane in hungry:
            wanted = lane.idle_slots()
            claim = await lane.queue.claim(wanted, self.lease_ms, self.worker_id,
                                           idle=self.running == 0)
            self._take(lane, claim)
            if self._isolating:
                return
            blocks += self._block_if_drained(lane, claim, wanted)
        if blocks == len(hungry):
            await self._slot_waiting.wait()  # a block ended, or a slot became idle

    def _block_if_drained(self, lane: _Lane, claim: Claim, wanted: int) -> bool:
        """Give a queue that had fewer jobs than were wanted a block; False if it had
        enough, or if its next scheduled job is due too soon to be worth one."""
        if len(claim.jobs) >= wanted:
            return False
        wait_s = IDLE_BLOCK_S if claim.wait_ms < 0 else min(IDLE_BLOCK_S, claim.wait_ms / 1000)
        if wait_s <= 0.001:
            return False
        # Only with one queue is "running nothing" sure to hold until the claim runs: other
        # queues' jobs may start meanwhile, and a suspect must run alone.
        idle = self.running == 0 and len(self._lanes) == 1
        lane.block_wanted = lane.idle_slots()
        lane.block = asyncio.create_task(self._blocked(lane, wait_s, lane.block_wanted, idle))
        return True

    async def _blocked(self, lane: _Lane, wait_s: float, wanted: int, idle: bool) -> Claim:
        """A block that hands its jobs to the slots as soon as its reply is read, a loop
        turn or two before the fetch loop could (what a job submitted to an idle worker
        waits for)."""
        try:
            claim = await lane.queue.claim_when_woken(wait_s, wanted, self.lease_ms,
                                                      self.worker_id, idle=idle)
            self._take(lane, claim)
            return claim
        finally:
            self._slot_waiting.set()

    def _collect_blocks(self) -> None:
        for lane in self._lanes.values():
            block = lane.block
            if block is not None and block.done():
                lane.block = None
                claim = block.result()  # a Redis error goes to run()'s backoff
                # Still drained: block again at once. A claim first would find nothing (the
                # block's claim just looked) and hold up the jobs just handed over.
                if not (self._isolating or (self._suspects_waiting and self.running > 0)):
                    self._block_if_drained(lane, claim, lane.block_wanted)

    def _take(self, lane: _Lane, claim: Claim) -> None:
        self._suspects_waiting |= claim.suspects > 0
        for job in claim.jobs:
            self._hand_over(lane, job)

    def _hand_over(self, lane: _Lane, job: Claimed) -> None:
        if not lane.hand_over(job):  # the slot went away (shutdown)
            if job.suspect:  # back through the reclaim, which keeps it running alone
                logger.info("no slot left for recovered job %s; its lease will lapse",
                            job.job.key)
            else:
                self._given_back.append(lane.queue.give_back(job))
            return
        self.running += 1
        if job.suspect:
            self._isolating = True
