"""An in-process worker (dispatcher, lease keeper, one SAQ worker per queue) on real Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from taskmaster import Function
from taskmaster.engine.dispatch import BLOCK_END_S, Dispatcher
from taskmaster.engine.jobs import JobClient, JobStatus, JobView, Retention, SubmitOptions
from taskmaster.engine.lease import LeaseKeeper
from taskmaster.engine.queue import TaskmasterQueue
from taskmaster.engine.worker import TaskmasterWorker
from taskmaster.registry import CatalogEntry
from tests.fixtures.waiting import eventually

PLUGIN, VERSION = "taskmaster-fn-test", "1.2.3"


class Functions:
    """A FunctionSource for tests: these functions, all runnable, changeable on the fly."""

    def __init__(self, functions: Sequence[Function]) -> None:
        self.entries = {f.name: CatalogEntry(f, PLUGIN, VERSION) for f in functions}

    def runnable(self, name: str) -> CatalogEntry | None:
        return self.entries.get(name)

    def resources_of(self, plugin: str) -> dict[str, Any]:
        return {}

    def active_functions(self) -> set[str]:
        return set(self.entries)


@asynccontextmanager
async def running_worker(redis_url: str, functions: Sequence[Function] | Functions, *,
                         queues: dict[str, int] | None = None, lease_s: float = 5.0,
                         worker_id: str = "w-test", keep_completed_count: int = 0,
                         grace_s: float = 5.0) -> AsyncIterator[list[TaskmasterWorker]]:
    source = functions if isinstance(functions, Functions) else Functions(functions)

    redis = Redis.from_url(redis_url)
    dispatcher = Dispatcher(redis, worker_id=worker_id, lease_s=lease_s)
    workers: list[TaskmasterWorker] = []

    def lost(queue: str, key: str) -> None:
        for worker in workers:
            if worker.tm_queue.name == queue:
                worker.lease_lost(key)

    leases = LeaseKeeper(redis_url, lease_s, lost)
    for name, concurrency in (queues or {"default": 4}).items():
        queue = TaskmasterQueue(redis, name, keep_completed_count=keep_completed_count)
        workers.append(TaskmasterWorker(
            queue, source, dispatcher=dispatcher, leases=leases,
            worker_id=worker_id, concurrency=concurrency, shutdown_grace_s=grace_s,
            lease_s=lease_s))
    leases.start()
    fetching = asyncio.create_task(dispatcher.run())
    runs = [asyncio.create_task(w.start()) for w in workers]
    try:
        yield workers
    finally:
        dispatcher.close()
        await asyncio.gather(*(w.stop() for w in workers))
        await asyncio.gather(*runs, return_exceptions=True)
        # It ends by itself once closed, giving back what it claimed too late.
        await asyncio.wait([fetching], timeout=BLOCK_END_S + 1)
        fetching.cancel()
        await asyncio.gather(fetching, return_exceptions=True)
        leases.stop()
        for w in workers:
            await w.tm_queue._pubsub.close()
        await redis.aclose()


@pytest.fixture
async def jobs(redis: Redis) -> AsyncIterator[JobClient]:
    client = JobClient(redis, retention=Retention(keep_completed_s=3600))
    try:
        yield client
    finally:
        await client.close()


async def finished(jobs: JobClient, job_id: str, timeout_s: float = 15) -> JobView:
    async def done() -> JobView | None:
        view = await jobs.get(job_id)
        terminal = (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.CANCELLED)
        return view if view.status in terminal else None

    return await eventually(done, timeout_s=timeout_s, message=f"{job_id} finished")


async def in_status(jobs: JobClient, job_id: str, status: JobStatus,
                    timeout_s: float = 10) -> JobView:
    async def reached() -> JobView | None:
        view = await jobs.get(job_id)
        return view if view.status == status else None

    return await eventually(reached, timeout_s=timeout_s, message=f"{job_id} {status}")


async def submit(jobs: JobClient, function: Function, payload: Any = None,
                 **options: Any) -> JobView:
    return await jobs.submit(function, PLUGIN, VERSION, payload, SubmitOptions(**options))
