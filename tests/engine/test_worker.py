"""TaskmasterQueue and TaskmasterWorker (SAQ subclasses) against a real Valkey."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from taskmaster import Context, Function, NonRetryableError
from taskmaster.engine.jobs import JobClient, JobStatus, JobView, SubmitOptions
from taskmaster.engine.queue import TaskmasterQueue
from taskmaster.engine.worker import TaskmasterWorker
from taskmaster.errors import InvalidPayloadError, UnknownFunctionError
from taskmaster.registry import CatalogEntry
from tests.fixtures.waiting import eventually

PLUGIN, VERSION = "taskmaster-fn-test", "1.2.3"


@dataclass(frozen=True)
class Point:
    x: int
    y: int = 0


@asynccontextmanager
async def running_worker(redis: Redis, functions: Sequence[Function], *,
                         concurrency: int = 4) -> AsyncIterator[TaskmasterWorker]:
    entries = {f.name: CatalogEntry(f, PLUGIN, VERSION) for f in functions}

    def resolve(name: str) -> CatalogEntry:
        if name not in entries:
            raise UnknownFunctionError(name, list(entries))
        return entries[name]

    worker = TaskmasterWorker(TaskmasterQueue(redis, "default"), resolve, lambda _: {},
                              worker_id="w-test", concurrency=concurrency, shutdown_grace_s=5)
    task = asyncio.create_task(worker.start())
    try:
        yield worker
    finally:
        await worker.stop()
        await task


@pytest.fixture
async def jobs(redis: Redis) -> AsyncIterator[JobClient]:
    client = JobClient(redis, keep_finished_s=3600)
    try:
        yield client
    finally:
        await client.close()


async def finished(jobs: JobClient, job_id: str, timeout_s: float = 10) -> JobView:
    async def done() -> JobView | None:
        view = await jobs.get(job_id)
        return view if view.status in (JobStatus.COMPLETE, JobStatus.FAILED) else None

    return await eventually(done, timeout_s=timeout_s, message=f"{job_id} finished")


async def submit(jobs: JobClient, function: Function, payload: Any = None,
                 **options: Any) -> JobView:
    return await jobs.submit(function, PLUGIN, VERSION, payload, SubmitOptions(**options))


async def test_job_completes_with_result_and_the_version_that_ran_it(
        redis: Redis, jobs: JobClient) -> None:
    async def add(ctx: Context, data: Point) -> Point:
        return Point(x=data.x + data.y, y=ctx.attempt)

    function = Function("test.add", add, input=Point)
    async with running_worker(redis, [function]):
        job = await submit(jobs, function, {"x": 2, "y": 3})
        assert job.status == JobStatus.QUEUED
        done = await finished(jobs, job.id)
    assert done.status == JobStatus.COMPLETE
    assert done.result == {"x": 5, "y": 1}
    assert (done.plugin, done.version, done.attempts) == (PLUGIN, VERSION, 1)
    assert [e.type for e in done.history] == ["submitted", "started", "completed"]
    started = done.history[1]
    assert (started.attempt, started.plugin, started.version, started.worker) == (
        1, PLUGIN, VERSION, "w-test")
    assert done.enqueued_at_ms and done.started_at_ms and done.completed_at_ms
    assert done.enqueued_at_ms <= done.started_at_ms <= done.completed_at_ms
    stored = await TaskmasterQueue(redis, "default").job(done.id.split(":", 1)[1])
    assert stored is not None
    assert stored.meta["attempts_log"] == [
        {"attempt": 1, "plugin": PLUGIN, "version": VERSION, "worker": "w-test"}]


async def test_failed_attempts_retry_with_exponential_backoff_then_fail(
        redis: Redis, jobs: JobClient) -> None:
    calls: list[int] = []

    async def flaky(ctx: Context, data: dict[str, Any]) -> None:
        calls.append(ctx.attempt)
        raise RuntimeError(f"nope {ctx.attempt}")

    function = Function("test.flaky", flaky, max_attempts=3, retry_base_s=0.1)
    async with running_worker(redis, [function]):
        job = await submit(jobs, function, {})
        done = await finished(jobs, job.id)
    assert done.status == JobStatus.FAILED
    assert calls == [1, 2, 3]
    assert done.attempts == 3 and done.max_attempts == 3
    assert done.error == "RuntimeError: nope 3"
    types = [e.type for e in done.history]
    assert types == ["submitted", "started", "retry_scheduled", "started", "retry_scheduled",
                     "started", "failed"]
    retries = [e for e in done.history if e.type == "retry_scheduled"]
    assert [r.delay_s for r in retries] == [0.1, 0.2], "base*2^(n-1), no jitter"
    assert retries[0].error == "RuntimeError: nope 1"
    assert retries[0].traceback and "Traceback" in retries[0].traceback
    starts = [e for e in done.history if e.type == "started"]
    assert all(s.version == VERSION for s in starts)
    for retry, next_start in zip(retries, starts[1:], strict=True):
        assert next_start.at_ms - retry.at_ms >= retry.delay_s * 1000 - 5  # type: ignore[operator]


async def test_non_retryable_error_fails_after_one_attempt(
        redis: Redis, jobs: JobClient) -> None:
    async def refuse(ctx: Context, data: dict[str, Any]) -> None:
        raise NonRetryableError("bad recipient")

    function = Function("test.refuse", refuse, max_attempts=5)
    async with running_worker(redis, [function]):
        done = await finished(jobs, (await submit(jobs, function)).id)
    assert done.status == JobStatus.FAILED
    assert done.attempts == 1
    assert done.max_attempts == 5
    assert done.error == "NonRetryableError: bad recipient"
    assert "retry_scheduled" not in [e.type for e in done.history]


async def test_sync_handler_runs_in_a_thread_and_reports_progress(
        redis: Redis, jobs: JobClient) -> None:
    seen: dict[str, Any] = {}

    def blocking(ctx: Context, data: dict[str, Any]) -> str:
        seen["thread"] = threading.current_thread()
        ctx.progress(0.5, "half way")
        ctx.heartbeat()
        return "done"

    function = Function("test.blocking", blocking)
    async with running_worker(redis, [function]):
        done = await finished(jobs, (await submit(jobs, function)).id)
    assert done.status == JobStatus.COMPLETE and done.result == "done"
    assert seen["thread"] is not threading.main_thread()
    progress = [e for e in done.history if e.type == "progress"]
    assert [(p.progress, p.message) for p in progress] == [(0.5, "half way")]
    assert done.progress == 1.0


async def test_timeout_is_a_failed_attempt(redis: Redis, jobs: JobClient) -> None:
    async def hang(ctx: Context, data: dict[str, Any]) -> None:
        await asyncio.sleep(30)

    function = Function("test.hang", hang)
    async with running_worker(redis, [function]):
        job = await submit(jobs, function, timeout_s=0.2, max_attempts=1)
        done = await finished(jobs, job.id)
    assert done.status == JobStatus.FAILED
    assert done.error is not None and "TimeoutError" in done.error


async def test_job_type_unknown_to_the_worker_fails_without_retry(
        redis: Redis, jobs: JobClient) -> None:
    async def nothing(ctx: Context, data: dict[str, Any]) -> None: ...

    known, unknown = Function("test.known", nothing), Function("test.unknown", nothing)
    async with running_worker(redis, [known]):
        done = await finished(jobs, (await submit(jobs, unknown)).id)
    assert done.status == JobStatus.FAILED and done.attempts == 1
    assert done.error is not None and "test.unknown" in done.error
    assert done.plugin is None and done.version is None


async def test_graceful_stop_lets_the_running_job_finish(redis: Redis, jobs: JobClient) -> None:
    release = asyncio.Event()

    async def slow(ctx: Context, data: dict[str, Any]) -> str:
        await release.wait()
        return "finished"

    function = Function("test.slow", slow)
    async with running_worker(redis, [function]) as worker:
        job = await submit(jobs, function)
        await eventually(lambda: jobs.get(job.id), message="job visible")

        async def active() -> bool:
            return (await jobs.get(job.id)).status == JobStatus.ACTIVE

        await eventually(active, message="job active")
        stopping = asyncio.create_task(worker.stop())
        await asyncio.sleep(0)  # let stop() begin before the job may end
        release.set()
        await stopping
    assert (await jobs.get(job.id)).result == "finished"


async def test_delayed_job_is_scheduled_not_run(redis: Redis, jobs: JobClient) -> None:
    ran: list[int] = []

    async def record(ctx: Context, data: dict[str, Any]) -> None:
        ran.append(1)

    function = Function("test.later", record)
    async with running_worker(redis, [function]):
        job = await submit(jobs, function, delay_s=3600)
        assert job.status == JobStatus.SCHEDULED
        now = await submit(jobs, function)
        await finished(jobs, now.id)
    assert ran == [1]
    assert (await jobs.get(job.id)).status == JobStatus.SCHEDULED


async def test_every_key_carries_the_queue_hash_tag(redis: Redis, jobs: JobClient) -> None:
    async def ok(ctx: Context, data: dict[str, Any]) -> None: ...

    function = Function("test.ok", ok, queue="mail")
    async with running_worker(redis, [function]):
        pass  # the worker on "default" writes its own keys
    await submit(jobs, function)
    keys = [k.decode() for k in await redis.keys("*")]
    mail_keys = [k for k in keys if "mail" in k]
    assert mail_keys and all(k.startswith("taskmaster:{mail}:") for k in mail_keys)
    assert all(k.startswith(("taskmaster:{mail}:", "taskmaster:{default}:")) for k in keys)


async def test_finished_job_and_history_expire_after_retention(redis: Redis) -> None:
    jobs = JobClient(redis, keep_finished_s=120)

    async def ok(ctx: Context, data: dict[str, Any]) -> None: ...

    function = Function("test.ok", ok)
    try:
        async with running_worker(redis, [function]):
            done = await finished(jobs, (await submit(jobs, function)).id)
    finally:
        await jobs.close()
    queue = TaskmasterQueue(redis, "default")
    key = done.id.split(":", 1)[1]
    assert 0 < await redis.ttl(queue.job_id(key)) <= 120
    assert 0 < await redis.ttl(queue.history_key(key)) <= 120


async def test_invalid_payload_stores_nothing(redis: Redis, jobs: JobClient) -> None:
    async def add(ctx: Context, data: Point) -> None: ...

    function = Function("test.add", add, input=Point)
    with pytest.raises(InvalidPayloadError) as caught:
        await submit(jobs, function, {"x": "two"})
    assert caught.value.details["field"] == "$.x"
    with pytest.raises(InvalidPayloadError, match="unknown field 'z'"):
        await submit(jobs, function, {"x": 1, "z": 1})
    with pytest.raises(InvalidPayloadError, match="missing required field"):
        await submit(jobs, function, {})
    assert await redis.dbsize() == 0
