"""TaskmasterQueue overrides that no worker run exercises on its own."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from saq.job import Status
from saq.utils import now

from taskmaster import Context, Function
from taskmaster.engine.jobs import JobClient, JobStatus, SubmitOptions
from taskmaster.engine.queue import ABANDONED, TaskmasterQueue


async def noop(ctx: Context, data: dict[str, Any]) -> None: ...


async def test_sweep_spares_a_job_being_taken_and_recovers_an_abandoned_one(
        redis: Redis) -> None:
    jobs = JobClient(redis, keep_finished_s=60)
    queue = TaskmasterQueue(redis, "default")
    try:
        function = Function("test.noop", noop)
        taken, abandoned = [
            await jobs.submit(function, "p", "1", {}, SubmitOptions()) for _ in range(2)]
        # Both are moved to `active` the way a worker's BLMOVE does, before any status write.
        for _ in range(2):
            await redis.lmove(queue._queued, queue._active, "LEFT", "RIGHT")
        sweep = asyncio.create_task(queue.sweep(lock=1, abort=0.1))
        await asyncio.sleep(0.1)  # the sweep has taken its first look
        live = await queue.job(taken.id.split(":", 1)[1])
        assert live is not None
        live.attempts, live.started, live.worker_id = 1, now(), "w-live"  # as SAQ's worker
        await queue.update(live, status=Status.ACTIVE)  # the live worker marks its job
        recovered = await sweep
        assert recovered == [queue.job_id(abandoned.id.split(":", 1)[1])]
        assert (await jobs.get(taken.id)).status == JobStatus.ACTIVE
        back = await jobs.get(abandoned.id)
        assert back.status == JobStatus.SCHEDULED, "retried with the function's backoff"
        assert back.history[-1].type == "retry_scheduled"
        assert back.history[-1].error == ABANDONED
        assert await redis.zscore(queue._incomplete, recovered[0])
        assert await redis.lrange(queue._active, 0, -1) == [queue.job_id(
            taken.id.split(":", 1)[1]).encode()]
    finally:
        await jobs.close()
        await queue._pubsub.close()
