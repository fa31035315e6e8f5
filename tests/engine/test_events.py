"""The event hub: one reader of the queues' streams, bounded fan-out, resume by id."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis

from taskmaster import Context, Function
from taskmaster.engine.events import BUFFER, EventHub, SubscriberTooSlowError, backlog
from taskmaster.engine.jobs import JobClient, SubmitOptions
from taskmaster.engine.keys import QueueKeys
from taskmaster.errors import InvalidArgumentError
from tests.engine.conftest import finished, running_worker
from tests.fixtures.waiting import eventually


async def noop(ctx: Context, data: dict[str, Any]) -> None: ...

NOOP = Function("test.noop", noop)


async def test_a_slow_subscriber_is_cut_off_while_a_fast_one_gets_everything(
        redis: Redis, jobs: JobClient) -> None:
    hub = EventHub(jobs, known_queues=lambda: {"default"})
    hub.start()
    try:
        slow = hub.subscribe(lambda e: True)
        fast = hub.subscribe(lambda e: True)
        await eventually(lambda: "default" in hub._positions, message="hub follows default")
        total = BUFFER + 200
        received: list[str] = []

        async def read_fast() -> None:
            while len(received) < total:
                received.append((await fast.next()).job_key)

        reader = asyncio.create_task(read_fast())
        items = [(NOOP, "p", "1", {}, SubmitOptions()) for _ in range(total)]
        # Two calls, more events together than a buffer holds, likely read at once.
        views = await jobs.submit_many(items[:BUFFER]) + await jobs.submit_many(items[BUFFER:])
        await asyncio.wait_for(reader, 20)
        assert received == [v.id.split(":", 1)[1] for v in views], "in order, none missing"
        assert slow.overflowed and slow not in hub._subscribers
        drained = 0
        with pytest.raises(SubscriberTooSlowError, match="resubscribe with `since`"):
            while True:
                await asyncio.wait_for(slow.next(), 5)
                drained += 1
        assert drained < BUFFER, "its buffer never grew past the bound"
    finally:
        await hub.stop()


async def test_backlog_reads_every_queue_after_a_cursor(redis: Redis, jobs: JobClient) -> None:
    mail = Function("test.mail", noop, queue="mail")
    first = await jobs.submit(NOOP, "p", "1", {}, SubmitOptions())
    second = await jobs.submit(mail, "p", "1", {}, SubmitOptions())
    third = await jobs.submit(NOOP, "p", "1", {}, SubmitOptions())
    everything = await backlog(jobs, ["default", "mail"], "0-0")
    assert sorted(e.job_id for e in everything) == sorted([first.id, second.id, third.id])
    assert [e.job_id for e in everything if e.queue == "default"] == [first.id, third.id]
    assert [e.position for e in everything] == sorted(e.position for e in everything)
    for cut in range(3):  # resuming after any event yields exactly the ones after it
        after = await backlog(jobs, ["default", "mail"], everything[cut].id)
        assert [e.id for e in after] == [e.id for e in everything[cut + 1:]]
    with pytest.raises(InvalidArgumentError):
        await backlog(jobs, ["default"], "not-an-id")


async def test_a_start_and_its_outcome_share_a_stream_entry_and_resume_between_them(
        valkey_url: str, redis: Redis, jobs: JobClient) -> None:
    async with running_worker(valkey_url, [NOOP]):
        job = await jobs.submit(NOOP, "p", "1", {}, SubmitOptions())
        done = await finished(jobs, job.id, timeout_s=10)
    assert [e.type for e in done.history] == ["submitted", "started", "completed"]
    everything = [e for e in await backlog(jobs, ["default"], "0-0") if e.job_id == job.id]
    assert [e.event.type for e in everything] == ["submitted", "started", "completed"]
    started, completed = everything[1], everything[2]
    assert started.stream_id == completed.stream_id, "one entry for a job this short"
    assert (started.index, completed.index) == (0, 1)
    assert started.event.at_ms <= completed.event.at_ms
    after_start = await backlog(jobs, ["default"], started.id)
    assert [e.id for e in after_start] == [completed.id], "resumes inside the entry"
    assert await backlog(jobs, ["default"], completed.id) == []


async def test_an_idle_hub_reads_nothing_and_a_new_subscriber_gets_what_follows(
        redis: Redis, jobs: JobClient) -> None:
    hub = EventHub(jobs, known_queues=lambda: {"default"})
    hub.start()
    try:
        await eventually(lambda: "default" in hub._positions, message="hub follows default")
        before = await jobs.submit_many([(NOOP, "p", "1", {}, SubmitOptions())] * 300)
        position = hub._positions["default"]
        await asyncio.sleep(0.3)  # a window for a reading hub to move; an idle one does not
        assert hub._positions["default"] == position, "nobody listens: nothing read"
        subscription = hub.subscribe(lambda e: True)
        await asyncio.wait_for(subscription.started(), 5)
        after = await jobs.submit_many([(NOOP, "p", "1", {}, SubmitOptions())] * 50)
        received = [(await asyncio.wait_for(subscription.next(), 5)).job_id for _ in after]
        assert received == [v.id for v in after], "every later event, none of the earlier"
        assert not {v.id for v in before} & set(received)
        hub.unsubscribe(subscription)
    finally:
        await hub.stop()


async def test_a_bulk_submission_neither_floods_a_reader_nor_trims_older_events(
        redis: Redis, jobs: JobClient) -> None:
    hub = EventHub(jobs, known_queues=lambda: {"default"})
    hub.start()
    try:
        singles = [await jobs.submit(NOOP, "p", "1", {}, SubmitOptions()) for _ in range(300)]
        older = {v.id for v in singles}  # a waking hub may replay its last few milliseconds
        subscription = hub.subscribe(lambda e: e.job_id not in older)
        await asyncio.wait_for(subscription.started(), 5)
        received: list[str] = []

        async def keep_up() -> None:
            while len(received) < 2 * 1000:
                received.append((await subscription.next()).job_id)

        reader = asyncio.create_task(keep_up())
        item = (NOOP, "p", "1", {}, SubmitOptions())
        first, second = await asyncio.gather(jobs.submit_many([item] * 1000),
                                             jobs.submit_many([item] * 1000))
        await asyncio.wait_for(reader, 20)
        assert sorted(received) == sorted(v.id for v in first + second)
        assert not subscription.overflowed, "a reader that keeps up is never cut off"
    finally:
        await hub.stop()
    entries = await redis.xrange(QueueKeys("default").events)
    assert max(len(json.loads(f.get(b"batch", b"[0]"))) for _, f in entries) <= 20
    kept = {e.job_id for e in await backlog(jobs, ["default"], "0-0")}
    assert kept == {v.id for v in singles + first + second}, "the bulk trimmed nothing older"


async def test_a_subscriber_of_an_idle_hub_gets_what_came_before_the_hub_woke(
        redis: Redis, jobs: JobClient) -> None:
    """graphql-transport-ws acknowledges no subscription: a client may submit right after
    subscribing, before the idle hub has even looked at the streams."""
    hub = EventHub(jobs, known_queues=lambda: {"default"})
    hub.start()
    try:
        await eventually(lambda: "default" in hub._positions, message="hub follows default")
        before = await jobs.submit(NOOP, "p", "1", {}, SubmitOptions())
        # A waking hub may replay its last few milliseconds: the earlier job is left out.
        subscription = hub.subscribe(lambda e: e.job_id != before.id)
        right_after = await jobs.submit(NOOP, "p", "1", {}, SubmitOptions())
        first = await asyncio.wait_for(subscription.next(), 5)
        assert first.job_id == right_after.id
    finally:
        await hub.stop()
