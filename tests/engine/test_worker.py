"""TaskmasterWorker and TaskmasterQueue running real jobs on a real Valkey."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from taskmaster import Context, Function, NonRetryableError
from taskmaster.engine.jobs import JobClient, JobStatus, JobView
from taskmaster.engine.queue import TaskmasterQueue
from taskmaster.errors import InvalidPayloadError
from taskmaster.registry import CatalogEntry
from tests.engine.conftest import (
    PLUGIN,
    VERSION,
    Functions,
    finished,
    in_status,
    running_worker,
    submit,
)
from tests.fixtures.waiting import eventually


@dataclass(frozen=True)
class Point:
    x: int
    y: int = 0


async def test_job_completes_with_result_and_the_version_that_ran_it(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    async def add(ctx: Context, data: Point) -> Point:
        return Point(x=data.x + data.y, y=ctx.attempt)

    function = Function("test.add", add, input=Point)
    async with running_worker(valkey_url, [function]):
        job = await submit(jobs, function, {"x": 2, "y": 3})
        done = await finished(jobs, job.id)
    assert done.status == JobStatus.COMPLETE
    assert done.result == {"x": 5, "y": 1}
    assert (done.plugin, done.version, done.attempts) == (PLUGIN, VERSION, 1)
    assert [e.type for e in done.history] == ["submitted", "started", "completed"]
    started = done.history[1]
    assert (started.attempt, started.plugin, started.version, started.worker) == (
        1, PLUGIN, VERSION, "w-test")
    assert all(e.at_ms > 0 for e in done.history)
    assert done.enqueued_at_ms and done.started_at_ms and done.completed_at_ms
    stored = await TaskmasterQueue(redis, "default").job(done.id.split(":", 1)[1])
    assert stored is not None
    assert (stored.attempts, stored.meta["plugin"], stored.meta["version"]) == (
        1, PLUGIN, VERSION)


async def test_retries_wait_1_2_4_8_seconds_then_the_job_is_dead_lettered(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    starts: list[float] = []

    async def flaky(ctx: Context, data: dict[str, Any]) -> None:
        starts.append(time.monotonic())
        raise RuntimeError(f"nope {ctx.attempt}")

    function = Function("test.flaky", flaky)  # defaults: 5 attempts, base 1 s, no jitter
    async with running_worker(valkey_url, [function]):
        job = await submit(jobs, function, {})
        done = await finished(jobs, job.id, timeout_s=30)
    assert done.status == JobStatus.FAILED
    assert done.attempts == 5 and done.max_attempts == 5
    assert done.error == "RuntimeError: nope 5"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for gap, expected in zip(gaps, [1, 2, 4, 8], strict=True):
        # Due times are the store's clock, gaps this process's monotonic clock: allow a
        # slewed wall clock (seen once here: gaps 0.3 % short) but not an early retry.
        assert expected * 0.99 <= gap <= expected + 0.3, gaps
    types = [e.type for e in done.history]
    assert types.count("retry_scheduled") == 4 and types[-2:] == ["failed", "dead_lettered"]
    retries = [e for e in done.history if e.type == "retry_scheduled"]
    assert [r.delay_s for r in retries] == [1, 2, 4, 8]
    assert retries[0].error == "RuntimeError: nope 1"
    assert retries[0].traceback and "Traceback" in retries[0].traceback
    assert all(e.version == VERSION for e in done.history if e.type == "started")
    keys = TaskmasterQueue(redis, "default").keys
    assert await redis.zscore(keys.dead, job.id.split(":", 1)[1]) is not None


async def test_jitter_spreads_retry_delays_when_asked(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    async def fail(ctx: Context, data: dict[str, Any]) -> None:
        raise RuntimeError("again")

    function = Function("test.jittery", fail, max_attempts=2, retry_base_s=0.4,
                        retry_jitter=True)
    async with running_worker(valkey_url, [function]):
        done = await finished(jobs, (await submit(jobs, function)).id)
    (retry,) = [e for e in done.history if e.type == "retry_scheduled"]
    assert retry.delay_s is not None and 0.2 <= retry.delay_s <= 0.4


async def test_non_retryable_error_fails_after_one_attempt(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    async def refuse(ctx: Context, data: dict[str, Any]) -> None:
        raise NonRetryableError("bad recipient")

    function = Function("test.refuse", refuse, max_attempts=5)
    async with running_worker(valkey_url, [function]):
        done = await finished(jobs, (await submit(jobs, function)).id)
    assert done.status == JobStatus.FAILED
    assert (done.attempts, done.max_attempts) == (1, 5)
    assert done.error == "NonRetryableError: bad recipient"
    assert "retry_scheduled" not in [e.type for e in done.history]


async def test_sync_handler_runs_in_a_thread_and_reports_progress(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    seen: dict[str, Any] = {}

    def blocking(ctx: Context, data: dict[str, Any]) -> str:
        seen["thread"] = threading.current_thread()
        ctx.progress(0.5, "half way")
        ctx.heartbeat()
        return "done"

    function = Function("test.blocking", blocking)
    async with running_worker(valkey_url, [function]):
        done = await finished(jobs, (await submit(jobs, function)).id)
    assert done.status == JobStatus.COMPLETE and done.result == "done"
    assert seen["thread"] is not threading.main_thread()
    progress = [e for e in done.history if e.type == "progress"]
    assert [(p.progress, p.message) for p in progress] == [(0.5, "half way")]
    assert done.progress == 1.0


async def test_timeout_is_a_failed_attempt(valkey_url: str, redis: Redis,
                                           jobs: JobClient) -> None:
    async def hang(ctx: Context, data: dict[str, Any]) -> None:
        await asyncio.sleep(30)

    function = Function("test.hang", hang)
    async with running_worker(valkey_url, [function]):
        job = await submit(jobs, function, timeout_s=0.2, max_attempts=1)
        done = await finished(jobs, job.id)
    assert done.status == JobStatus.FAILED
    assert done.error == "TimeoutError: attempt exceeded timeoutSeconds=0.2"


async def test_a_slot_goes_on_serving_after_its_handler_was_stopped(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    """A slot is one task for many jobs: a timeout, a cancel request, a handler that
    swallows its cancellation or raises CancelledError by itself, a ContextVar set by a
    handler, none of it may reach the slot's next job."""
    started = asyncio.Event()
    tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="clean")
    seen: list[str] = []

    async def hang(ctx: Context, data: dict[str, Any]) -> None:
        tag.set("dirty")
        started.set()
        await asyncio.Event().wait()  # until stopped

    async def shrug(ctx: Context, data: dict[str, Any]) -> str:
        try:
            await asyncio.Event().wait()  # until stopped
        except asyncio.CancelledError:
            return "kept going"
        return "never stopped"

    async def rogue(ctx: Context, data: dict[str, Any]) -> None:
        other = asyncio.get_running_loop().create_future()
        other.cancel()
        await other  # CancelledError, though nobody cancelled this attempt

    async def check(ctx: Context, data: dict[str, Any]) -> str:
        seen.append(tag.get())
        return "fine"

    hang_fn, shrug_fn = Function("test.hang", hang), Function("test.shrug", shrug)
    rogue_fn = Function("test.rogue", rogue, max_attempts=2)
    check_fn = Function("test.check", check)

    async def next_job_runs() -> None:
        assert (await finished(jobs, (await submit(jobs, check_fn)).id)).result == "fine"

    async with running_worker(valkey_url, [hang_fn, shrug_fn, rogue_fn, check_fn],
                              queues={"default": 1}):
        timed_out = await submit(jobs, hang_fn, timeout_s=0.2, max_attempts=1)
        assert (await finished(jobs, timed_out.id)).status == JobStatus.FAILED
        await next_job_runs()

        started.clear()
        cancelled = await submit(jobs, hang_fn)
        await started.wait()
        await jobs.cancel(cancelled.id)
        assert (await finished(jobs, cancelled.id)).status == JobStatus.CANCELLED
        await next_job_runs()

        swallowed = await submit(jobs, shrug_fn, timeout_s=0.2, max_attempts=1)
        done = await finished(jobs, swallowed.id)
        assert (done.status, done.result) == (JobStatus.COMPLETE, "kept going")
        await next_job_runs()

        failed = await finished(jobs, (await submit(jobs, rogue_fn, retry_base_s=0.1)).id)
        assert (failed.status, failed.attempts) == (JobStatus.FAILED, 2)
        assert "raised CancelledError without being cancelled" in (failed.error or "")
        await next_job_runs()
    assert seen == ["clean"] * 4


async def test_a_slot_outlives_an_error_outside_any_handler(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    async def nothing(ctx: Context, data: dict[str, Any]) -> str:
        return "ran"

    class Faulty(Functions):
        def runnable(self, name: str) -> CatalogEntry | None:
            if name == "test.broken":
                raise RuntimeError("the registry broke")
            return super().runnable(name)

    broken, fine = Function("test.broken", nothing), Function("test.fine", nothing)
    async with running_worker(valkey_url, Faulty([broken, fine]), queues={"default": 1}):
        await submit(jobs, broken)
        for _ in range(3):
            done = await finished(jobs, (await submit(jobs, fine)).id)
            assert done.result == "ran"


async def test_a_job_whose_function_is_not_loaded_waits_until_it_is(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    async def nothing(ctx: Context, data: dict[str, Any]) -> str:
        return "ran"

    known, missing = Function("test.known", nothing), Function("test.missing", nothing)
    source = Functions([known])
    async with running_worker(valkey_url, source, lease_s=0.6) as (worker,):
        job = await submit(jobs, missing)

        async def parked() -> bool:
            view = await jobs.get(job.id)
            return [e.type for e in view.history] == ["submitted", "waiting"]

        await eventually(parked, message="job set aside")
        view = await jobs.get(job.id)
        assert view.status == JobStatus.QUEUED and view.attempts == 0
        assert await worker.tm_queue.count("queued") == 1
        source.entries["test.missing"] = CatalogEntry(missing, PLUGIN, VERSION)
        done = await finished(jobs, job.id)  # the worker's sweep puts it back
    assert done.status == JobStatus.COMPLETE and done.result == "ran" and done.attempts == 1


async def test_graceful_stop_lets_the_running_job_finish(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    release = asyncio.Event()

    async def slow(ctx: Context, data: dict[str, Any]) -> str:
        await release.wait()
        return "finished"

    function = Function("test.slow", slow)
    async with running_worker(valkey_url, [function]) as (worker,):
        job = await submit(jobs, function)
        await in_status(jobs, job.id, JobStatus.ACTIVE)
        stopping = asyncio.create_task(worker.stop())
        # saq 0.26.4: stop() empties `tasks` right before it waits out the grace period.
        await eventually(lambda: not worker.tasks, message="stop() waiting for the job")
        release.set()
        await stopping
    assert (await jobs.get(job.id)).result == "finished"


async def test_shutdown_past_the_grace_requeues_without_spending_an_attempt(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    running = asyncio.Event()

    async def endless(ctx: Context, data: dict[str, Any]) -> None:
        running.set()
        await asyncio.sleep(60)

    function = Function("test.endless", endless, max_attempts=1)
    async with running_worker(valkey_url, [function], grace_s=0.2):
        job = await submit(jobs, function)
        # Running in the worker, not only leased (ACTIVE): a job claimed but not yet
        # started when the worker stops is given back untouched (next test).
        await asyncio.wait_for(running.wait(), 10)
    back = await jobs.get(job.id)
    assert back.status == JobStatus.QUEUED
    assert back.attempts == 0
    assert back.history[-1].type == "requeued"
    key = job.id.split(":", 1)[1]
    assert await redis.hget(jobs.queue("default").keys.attempts, key) == b"0", \
        "the next attempt is numbered 1 again"


async def test_a_job_claimed_but_never_started_is_given_back_untouched(
        redis: Redis, jobs: JobClient) -> None:
    async def noop(ctx: Context, data: dict[str, Any]) -> None: ...

    job = await submit(jobs, Function("test.noop", noop))
    queue = jobs.queue("default")
    (claimed,) = (await queue.claim(10, 60_000, "w")).jobs
    assert (await jobs.get(job.id)).status == JobStatus.ACTIVE
    assert await queue.give_back(claimed) == 1
    back = await jobs.get(job.id)
    assert (back.status, back.attempts) == (JobStatus.QUEUED, 0)
    assert [e.type for e in back.history] == ["submitted"], "no trace of the claim"
    (again,) = (await queue.claim(10, 60_000, "w")).jobs
    assert again.attempt == 1, "its attempt number was not spent"


async def test_a_long_attempt_has_its_start_on_record_while_it_runs(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    began: list[float] = []

    async def slow(ctx: Context, data: dict[str, Any]) -> None:
        began.append(time.time())
        await asyncio.sleep(2)

    function = Function("test.slow", slow)
    async with running_worker(valkey_url, [function]):
        job = await submit(jobs, function)
        running = await eventually(
            lambda: _started(jobs, job.id), timeout_s=10, message="start on record")
        assert running.status == JobStatus.ACTIVE and running.attempts == 1
        assert time.time() - began[0] < 1.0, "written within the hold, not at the end"
        started = next(e for e in running.history if e.type == "started")
        assert abs(started.at_ms / 1000 - began[0]) < 0.05, "stamped with its real start"


async def _started(jobs: JobClient, job_id: str) -> JobView | None:
    view = await jobs.get(job_id)
    return view if any(e.type == "started" for e in view.history) else None


async def test_delayed_job_is_scheduled_until_due(valkey_url: str, redis: Redis,
                                                  jobs: JobClient) -> None:
    ran: list[float] = []

    async def record(ctx: Context, data: dict[str, Any]) -> None:
        ran.append(time.monotonic())

    function = Function("test.later", record)
    async with running_worker(valkey_url, [function]):
        far = await submit(jobs, function, delay_s=3600)
        assert far.status == JobStatus.SCHEDULED and far.scheduled_for_ms
        submitted = time.monotonic()
        soon = await submit(jobs, function, delay_s=0.5)
        assert soon.status == JobStatus.SCHEDULED
        await finished(jobs, soon.id)
    assert 0.45 <= ran[0] - submitted <= 0.8
    assert (await jobs.get(far.id)).status == JobStatus.SCHEDULED


async def test_every_key_carries_the_queue_hash_tag(valkey_url: str, redis: Redis,
                                                    jobs: JobClient) -> None:
    async def ok(ctx: Context, data: dict[str, Any]) -> None: ...

    function = Function("test.ok", ok, queue="mail")
    async with running_worker(valkey_url, [function], queues={"mail": 2}):
        await finished(jobs, (await submit(jobs, function)).id)
        await submit(jobs, function, delay_s=60)
    keys = [k.decode() for k in await redis.keys("*")]
    assert any("{mail}:job:" in k for k in keys) and any("{mail}:history:" in k for k in keys)
    assert all(k.startswith("taskmaster:{mail}:") for k in keys if k != "taskmaster:queues")


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
