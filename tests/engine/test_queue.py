"""Queue semantics through TaskmasterQueue's scripts: fairness, priorities, cancel,
idempotency, dead letters, retention, listing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from taskmaster import Context, Function, Priority
from taskmaster.engine.deadletters import purge_dead_letters, replay_dead_letters
from taskmaster.engine.jobs import JobClient, JobStatus, Retention, SubmitOptions
from taskmaster.engine.listing import JobFilter, dead_letters, list_jobs, queue_stats
from taskmaster.engine.queue import TaskmasterQueue
from taskmaster.errors import JobStateError
from tests.engine.conftest import finished, in_status, running_worker, submit
from tests.fixtures.waiting import eventually

WEIGHTS = {Priority.CRITICAL: 8, Priority.HIGH: 4, Priority.NORMAL: 2, Priority.LOW: 1}


async def noop(ctx: Context, data: dict[str, Any]) -> None: ...

NOOP = Function("test.noop", noop)


async def fill(jobs: JobClient, count: int, priority: Priority) -> None:
    for start in range(0, count, 200):
        await asyncio.gather(*(submit(jobs, NOOP, priority=priority)
                               for _ in range(min(200, count - start))))


async def dispatch(queue: TaskmasterQueue, count: int, batch: int = 50) -> list[Priority]:
    levels: list[Priority] = []
    while len(levels) < count:
        claimed = (await queue.claim(min(batch, count - len(levels)), 60_000, "w")).jobs
        assert claimed, "ran out of jobs"
        levels += [c.level for c in claimed]
    return levels


async def test_dispatch_is_weighted_fair_in_every_window_of_1000(
        redis: Redis, jobs: JobClient) -> None:
    for level in WEIGHTS:
        await fill(jobs, 1200, level)
    levels = await dispatch(jobs.queue("default"), 2000)
    for start in (0, 333, 1000):
        counts = Counter(levels[start:start + 1000])
        for level, weight in WEIGHTS.items():
            expected = 1000 * weight / 15
            assert abs(counts[level] - expected) <= 0.1 * expected, (start, counts)


async def test_an_empty_level_gives_its_share_to_the_others(
        redis: Redis, jobs: JobClient) -> None:
    await fill(jobs, 600, Priority.HIGH)
    await fill(jobs, 600, Priority.LOW)
    counts = Counter(await dispatch(jobs.queue("default"), 500))
    assert counts[Priority.HIGH] == 400 and counts[Priority.LOW] == 100


async def test_a_critical_job_overtakes_a_backlog_of_10000(redis: Redis, jobs: JobClient) -> None:
    await fill(jobs, 10_000, Priority.NORMAL)
    queue = jobs.queue("default")
    await dispatch(queue, 25)  # a worker is busy draining the backlog
    urgent = await submit(jobs, NOOP, priority=Priority.CRITICAL)
    concurrency = 10
    order: list[str] = []
    while len(order) < concurrency + 10:
        claimed = (await queue.claim(concurrency, 60_000, "w")).jobs
        order += [c.job.key for c in claimed]
    assert urgent.id.split(":", 1)[1] in order


async def test_set_priority_moves_a_queued_job_exactly_once(redis: Redis,
                                                            jobs: JobClient) -> None:
    job = await submit(jobs, NOOP)
    key = job.id.split(":", 1)[1]
    keys = jobs.queue("default").keys
    moved = await jobs.set_priority(job.id, Priority.CRITICAL)
    assert moved.priority == Priority.CRITICAL
    assert await redis.lrange(keys.queued(Priority.NORMAL), 0, -1) == []
    assert await redis.lrange(keys.queued(Priority.CRITICAL), 0, -1) == [key.encode()]
    assert moved.history[-1].type == "priority_changed"
    assert moved.history[-1].message == "NORMAL -> CRITICAL"
    later = await submit(jobs, NOOP, delay_s=60)
    assert (await jobs.set_priority(later.id, Priority.LOW)).priority == Priority.LOW
    (claimed,) = (await jobs.queue("default").claim(1, 60_000, "w")).jobs
    assert claimed.level == Priority.CRITICAL
    with pytest.raises(JobStateError, match="already running"):
        await jobs.set_priority(job.id, Priority.LOW)


async def test_cancel_in_every_state(valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    queued = await submit(jobs, NOOP)
    scheduled = await submit(jobs, NOOP, delay_s=60)
    for job in (queued, scheduled):
        cancelled = await jobs.cancel(job.id)
        assert cancelled.status == JobStatus.CANCELLED
        assert cancelled.history[-1].type == "cancelled"
    assert await jobs.queue("default").count("incomplete") == 0

    seen: dict[str, Any] = {}

    async def wait_forever(ctx: Context, data: dict[str, Any]) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen["async"] = True
            raise

    def spin(ctx: Context, data: dict[str, Any]) -> str:
        while not ctx.cancelled:
            time.sleep(0.01)
        seen["sync"] = True
        return "stopped"

    async_fn = Function("test.forever", wait_forever, max_attempts=5)
    sync_fn = Function("test.spin", spin, max_attempts=5)
    async with running_worker(valkey_url, [async_fn, sync_fn]):
        running = [await submit(jobs, async_fn), await submit(jobs, sync_fn)]
        for job in running:
            await in_status(jobs, job.id, JobStatus.ACTIVE)
            requested = await jobs.cancel(job.id)
            # ACTIVE shows from the claim; the worker's `started` may land just after this.
            assert "cancel_requested" in [e.type for e in requested.history]
            done = await finished(jobs, job.id)
            assert done.status == JobStatus.CANCELLED and done.attempts == 1
        await eventually(lambda: len(seen) == 2, message="both handlers told")
    with pytest.raises(JobStateError, match="already CANCELLED"):
        await jobs.cancel(queued.id)


async def test_idempotency_key_gives_one_job_under_50_concurrent_submissions(
        valkey_url: str, redis: Redis) -> None:
    # Separate clients (and connections), as separate API processes would be.
    clients = [JobClient(Redis.from_url(valkey_url)) for _ in range(5)]
    try:
        views = await asyncio.gather(*(
            submit(clients[i % 5], NOOP, {"n": 1}, idempotency_key="order-42")
            for i in range(50)))
        assert len({v.id for v in views}) == 1
        assert views[0].idempotency_key == "order-42"
        assert await redis.zcard(clients[0].queue("default").keys.index) == 1
        assert await clients[0].queue("default").count("queued") == 1
        with pytest.raises(JobStateError, match="another function or payload"):
            await submit(clients[0], NOOP, {"n": 2}, idempotency_key="order-42")
    finally:
        for client in clients:
            await client.close()
            await client.redis.aclose()


async def test_dead_letters_list_replay_and_purge(valkey_url: str, redis: Redis,
                                                  jobs: JobClient, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"

    async def until_fixed(ctx: Context, data: dict[str, Any]) -> str:
        if not fixed.exists():
            raise ConnectionError(f"smtp down for {data['to']}")
        return "sent"

    function = Function("test.mail", until_fixed, max_attempts=2, retry_base_s=0.05)
    other = Function("test.other", until_fixed, max_attempts=1)
    async with running_worker(valkey_url, [function, other]):
        failed = [await submit(jobs, function, {"to": f"u{i}"}) for i in range(3)]
        odd = await submit(jobs, other, {"to": "x"})
        for job in [*failed, odd]:
            assert (await finished(jobs, job.id)).status == JobStatus.FAILED

        page = await dead_letters(jobs, JobFilter(), 10, None)
        assert len(page.jobs) == 4
        by_function = await dead_letters(jobs, JobFilter(function="test.mail"), 2, None)
        assert len(by_function.jobs) == 2 and by_function.has_next_page
        rest = await dead_letters(jobs, JobFilter(function="test.mail"), 2,
                                  by_function.end_cursor)
        assert len(rest.jobs) == 1 and not rest.has_next_page
        assert {j.id for _, j in by_function.jobs + rest.jobs} == {j.id for j in failed}
        errors = await dead_letters(jobs, JobFilter(error_contains="SMTP DOWN FOR U1"), 10, None)
        assert [j.id for _, j in errors.jobs] == [failed[1].id]
        dead = errors.jobs[0][1]
        assert dead.error == "ConnectionError: smtp down for u1"
        assert [e.type for e in dead.history].count("started") == 2

        fixed.touch()
        assert await replay_dead_letters(jobs, [], JobFilter(function="test.mail")) == 3
        for job in failed:
            done = await finished(jobs, job.id)
            assert done.status == JobStatus.COMPLETE and done.result == "sent"
            assert done.attempts == 3 and done.max_attempts == 4
            assert "replayed" in [e.type for e in done.history]
        assert await purge_dead_letters(jobs, [odd.id], None) == 1
    assert (await dead_letters(jobs, JobFilter(), 10, None)).jobs == []
    keys = jobs.queue("default").keys
    odd_key = odd.id.split(":", 1)[1]
    assert not await redis.exists(keys.job(odd_key), keys.history(odd_key))


async def test_retry_job_reruns_failed_and_cancelled_jobs_only(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    cancelled = await jobs.cancel((await submit(jobs, NOOP)).id)
    async with running_worker(valkey_url, [NOOP]):
        again = await jobs.retry(cancelled.id)
        assert again.history[-1].type == "retried"
        done = await finished(jobs, cancelled.id)
        assert done.status == JobStatus.COMPLETE
        with pytest.raises(JobStateError, match="only CANCELLED or FAILED"):
            await jobs.retry(done.id)


async def test_retention_removes_finished_jobs_with_history_after_their_period(
        valkey_url: str, redis: Redis) -> None:
    jobs = JobClient(redis, retention=Retention(keep_completed_s=0.5, keep_dead_s=3600))

    async def fail(ctx: Context, data: dict[str, Any]) -> None:
        raise RuntimeError("no")

    failing = Function("test.fail", fail, max_attempts=1)
    try:
        async with running_worker(valkey_url, [NOOP, failing]) as (worker,):
            done = await finished(jobs, (await submit(jobs, NOOP, idempotency_key="k")).id)
            dead = await finished(jobs, (await submit(jobs, failing)).id)
            queue = worker.tm_queue
            await queue.apply_retention()
            assert (await jobs.get(done.id)).status == JobStatus.COMPLETE, "not before its time"

            async def gone() -> bool:
                await queue.apply_retention()
                return not await redis.exists(queue.keys.job(done.id.split(":", 1)[1]))

            await eventually(gone, timeout_s=5, message="completed job removed")
            key = done.id.split(":", 1)[1]
            assert not await redis.exists(queue.keys.history(key))
            assert await redis.zscore(queue.keys.index, key) is None
            assert await redis.hlen(queue.keys.idempotency) == 0
            assert (await jobs.get(dead.id)).status == JobStatus.FAILED, "dead kept 1 h"
            again = await submit(jobs, NOOP, idempotency_key="k")
            assert again.id != done.id, "the key is free again"
    finally:
        await jobs.close()


async def test_store_stays_bounded_under_a_stream_of_jobs(valkey_url: str,
                                                          redis: Redis) -> None:
    jobs = JobClient(redis)
    try:
        async with running_worker(valkey_url, [NOOP], keep_completed_count=50,
                                  queues={"default": 20}) as (worker,):
            used = []
            for _ in range(3):
                ids = [(await submit(jobs, NOOP, {"pad": "x" * 200})).id for _ in range(300)]
                await finished(jobs, ids[-1])
                await eventually(lambda: _idle(jobs), message="drained")
                await worker.tm_queue.apply_retention()
                # The event stream grows up to its own bound (20,000 entries), far off here.
                stream = await redis.memory_usage(worker.tm_queue.keys.events, samples=0)
                used.append(int((await redis.info("memory"))["used_memory"]) - int(stream))
                assert await redis.zcard(worker.tm_queue.keys.done) == 50
                assert len(await redis.keys("taskmaster:{default}:job:*")) == 50
        assert used[2] <= used[1] * 1.05 + 65536, used
    finally:
        await jobs.close()


async def _count_active(queue: TaskmasterQueue) -> bool:
    return await queue.count("active") == 2


async def _idle(jobs: JobClient) -> bool:
    return await jobs.queue("default").count("incomplete") == 0


async def test_listing_jobs_newest_first_with_filters_and_queue_depths(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    mail = Function("test.mail", noop, queue="mail")
    ids = [(await submit(jobs, NOOP, priority=Priority.HIGH)).id for _ in range(3)]
    ids += [(await submit(jobs, mail)).id for _ in range(2)]
    await submit(jobs, NOOP, delay_s=60)
    everything = await list_jobs(jobs, JobFilter(), 100, None)
    assert len(everything.jobs) == 6 and not everything.has_next_page
    submitted = [j.enqueued_at_ms for _, j in everything.jobs]
    assert submitted == sorted(submitted, reverse=True)
    first = await list_jobs(jobs, JobFilter(priority=Priority.HIGH), 2, None)
    second = await list_jobs(jobs, JobFilter(priority=Priority.HIGH), 2, first.end_cursor)
    assert [j.id for _, j in first.jobs + second.jobs] == ids[2::-1]
    assert not second.has_next_page
    mails = await list_jobs(jobs, JobFilter(queue="mail"), 10, None)
    assert {j.id for _, j in mails.jobs} == set(ids[3:])
    scheduled = await list_jobs(jobs, JobFilter(status=JobStatus.SCHEDULED), 10, None)
    assert len(scheduled.jobs) == 1
    stats = {s.name: s for s in await queue_stats(jobs)}
    assert stats["default"].queued[Priority.HIGH] == 3
    assert stats["default"].scheduled == 1 and stats["mail"].queued[Priority.NORMAL] == 2


async def test_a_flood_on_one_queue_does_not_delay_another(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    async def slow(ctx: Context, data: dict[str, Any]) -> None:
        await asyncio.sleep(0.5)

    flood = Function("test.report", slow, queue="reports")
    urgent = Function("test.mail", noop, queue="email")
    async with running_worker(valkey_url, [flood, urgent],
                              queues={"reports": 2, "email": 2}):
        for _ in range(200):
            await submit(jobs, flood)
        reports = jobs.queue("reports")
        await eventually(lambda: _count_active(reports), message="reports slots busy")
        mail = await submit(jobs, urgent)
        done = await finished(jobs, mail.id, timeout_s=2)
    assert done.status == JobStatus.COMPLETE
    assert done.started_at_ms is not None and done.enqueued_at_ms is not None
    assert done.started_at_ms - done.enqueued_at_ms < 300


async def test_saq_entry_points_keep_our_bookkeeping_or_refuse(redis: Redis,
                                                               jobs: JobClient) -> None:
    queue = jobs.queue("default")
    saq_job = await queue.enqueue("test.noop", meta={"priority": "HIGH"}, scheduled=0)
    assert saq_job is not None
    view = await jobs.get(f"default:{saq_job.key}")
    assert view.status == JobStatus.QUEUED and view.priority == Priority.HIGH
    assert [e.type for e in view.history] == ["submitted"]
    assert await queue.count("queued") == 1 and await queue.count("incomplete") == 1
    assert await queue.schedule() == []
    for bypass in (queue.dequeue(), queue._update(saq_job), queue._retry(saq_job, None),
                   queue._finish(saq_job, saq_job.status), queue.abort(saq_job, "x")):
        with pytest.raises(NotImplementedError, match="TaskmasterWorker and JobClient"):
            await bypass
    assert queue.job_id("k") == "taskmaster:{default}:job:k"
    assert queue.job_key_from_id(queue.job_id("k")) == "k"


async def test_weights_are_configurable_per_queue(redis: Redis, jobs: JobClient) -> None:
    from taskmaster.errors import ConfigError
    from taskmaster.worker_process import parse_weights

    weights = parse_weights(("4:3:2:1", "email=1:1:1:1"))
    assert weights == {None: (4, 3, 2, 1), "email": (1, 1, 1, 1)}
    for bad in ("1:2:3", "email=0:1:1:1", "a:b:c:d"):
        with pytest.raises(ConfigError, match="four whole numbers"):
            parse_weights((bad,))
    for level in WEIGHTS:
        await fill(jobs, 100, level)
    even = TaskmasterQueue(redis, "default", weights=weights["email"])
    counts = Counter(await dispatch(even, 200))
    assert set(counts.values()) == {50}


async def test_a_batch_stores_each_job_key_once(redis: Redis, jobs: JobClient) -> None:
    """A batch's records go in with one MSETNX; a key that exists, or repeats within the
    batch, must still be refused job by job (never stored twice, never queued twice)."""
    queue = jobs.queue("default")
    saq_job = await queue.enqueue("test.noop", key="taken", scheduled=0)
    assert saq_job is not None and saq_job.key == "taken"

    def item(key: str) -> tuple[Any, ...]:
        built = jobs._build(NOOP, "p", "1", {"n": key}, SubmitOptions())
        built[0].key = key
        return built

    repeated = await queue.submit_many([item("a"), item("b"), item("a")])
    assert repeated == [(True, "a"), (True, "b"), (False, "a")]
    assert (await jobs.get("default:a")).payload == {"n": "a"}
    assert await queue.count("queued") == 3  # taken, a, b
    existing = await queue.submit_many([item("c"), item("taken"), item("d")])
    assert existing == [(True, "c"), (False, "taken"), (True, "d")]
    assert (await jobs.get("default:taken")).function == "test.noop"
    assert await queue.count("queued") == 5


async def test_a_job_listed_twice_is_claimed_once(redis: Redis, jobs: JobClient) -> None:
    """The jobs of one claim share its lease token, so a duplicate in the lists (never
    expected) must not be leased twice."""
    job = await submit(jobs, NOOP)
    key = job.id.split(":", 1)[1]
    queue = TaskmasterQueue(redis, "default")
    await redis.rpush(queue.keys.queued(Priority.NORMAL), key)  # type: ignore[misc]
    claim = await queue.claim(10, 5000, "w-test")
    assert [claimed.job.key for claimed in claim.jobs] == [key]
    assert claim.jobs[0].token.startswith("w-test:")
