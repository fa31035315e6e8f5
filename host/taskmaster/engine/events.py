"""The job event firehose: every queue's event stream, read once per process and fanned out.

Stream ids come from the store's clock, so they order events across queues too (ties in
one millisecond are broken by queue name). One stream entry holds up to 20 events of a
batched script call (field `batch`: a JSON array of [job key, function, event]), or the
one event of a cold path (fields `job`, `fn`, `event`). An event's id, `<stream
id>/<queue>` for an entry's first event and `<stream id>.<n>/<queue>` for its n-th after
that, is the cursor a client passes as `since` to resume. Each subscriber has a bounded
buffer: one that falls too far behind is dropped with SubscriberTooSlowError rather than
slowing the others or growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import msgspec
from redis.exceptions import RedisError

from taskmaster.engine.history import JobEvent, decode_event_list, decode_events
from taskmaster.engine.jobs import JobClient, JobStatus, public_id
from taskmaster.engine.keys import QueueKeys
from taskmaster.errors import InvalidArgumentError, TaskmasterError

logger = logging.getLogger(__name__)

BUFFER = 1000
READ_BLOCK_MS = 1000
READ_COUNT = 20
"""Entries per stream and read: at most 20 x 20 events (EVENTS_PER_ENTRY in scripts.py),
well under a subscriber's BUFFER, so a burst never cuts off one that keeps up."""
QUEUE_REFRESH_S = 1.0
WAKE_MARGIN_MS = 5
"""A waking hub starts this much before its first subscriber arrived (clock reading and
millisecond rounding): at worst a few earlier events, never a missed one."""

STATUS_OF_EVENT = {
    "submitted": JobStatus.QUEUED, "started": JobStatus.ACTIVE, "progress": JobStatus.ACTIVE,
    "retry_scheduled": JobStatus.SCHEDULED, "completed": JobStatus.COMPLETE,
    "failed": JobStatus.FAILED, "dead_lettered": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED, "replayed": JobStatus.QUEUED,
    "retried": JobStatus.QUEUED, "recovered": JobStatus.QUEUED, "requeued": JobStatus.QUEUED,
    "waiting": JobStatus.QUEUED,
}


class SubscriberTooSlowError(TaskmasterError):
    code = "TOO_SLOW"


@dataclass(frozen=True)
class StreamEvent:
    stream_id: str
    """Of the stream entry holding the event."""
    queue: str
    job_key: str
    function: str
    event: JobEvent
    index: int = 0
    """Within its stream entry."""

    @property
    def id(self) -> str:
        """The cursor to resume after this event."""
        return f"{self.stream_id}{f'.{self.index}' if self.index else ''}/{self.queue}"

    @property
    def order(self) -> tuple[int, int, int]:
        """Within its queue's stream."""
        ms, seq, _ = _order(self.stream_id)
        return ms, seq, self.index

    @property
    def position(self) -> tuple[int, int, int, str]:
        """Across queues."""
        return (*self.order, self.queue)

    @property
    def job_id(self) -> str:
        return public_id(self.queue, self.job_key)

    @property
    def status(self) -> JobStatus | None:
        return STATUS_OF_EVENT.get(self.event.type)


Match = Callable[[StreamEvent], bool]


class Subscription:
    def __init__(self, hub: EventHub, match: Match) -> None:
        self.hub = hub
        self.match = match
        self.buffer: asyncio.Queue[StreamEvent | None] = asyncio.Queue(BUFFER)
        self.overflowed = False
        self.live = asyncio.Event()
        """Set once every event from now on will be offered (see EventHub)."""

    async def started(self) -> None:
        """Until the hub reads every event after this moment: read any state the
        subscriber relies on only after this."""
        await self.live.wait()

    def offer(self, event: StreamEvent) -> None:
        if self.overflowed or not self.match(event):
            return
        try:
            self.buffer.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            self.hub.unsubscribe(self)
            with contextlib.suppress(asyncio.QueueFull):
                self.buffer.get_nowait()
                self.buffer.put_nowait(None)

    async def next(self) -> StreamEvent:
        item = await self.buffer.get()
        if item is None:
            raise SubscriberTooSlowError(
                f"this subscription fell more than {BUFFER} events behind and was closed;"
                " resubscribe with `since` set to the last event id you received")
        return item


class EventHub:
    """One reader of all queues' event streams per process; subscribers filter in memory.

    With no subscriber the hub reads nothing (parsing every event of a busy store for
    nobody was a tenth of a busy API's CPU); the first subscriber wakes it, and it starts
    reading from the moment that subscriber arrived, on the store's clock.
    """

    def __init__(self, jobs: JobClient,
                 known_queues: Callable[[], set[str]] = lambda: set()) -> None:
        self.jobs = jobs
        self.known_queues = known_queues
        """Queues to follow even before the store lists them (e.g. the functions' own)."""
        self._subscribers: set[Subscription] = set()
        self._positions: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._queues_checked = 0.0
        self._reading = False
        self._subscribed = asyncio.Event()
        self._woken_at: float | None = None
        """When the first subscriber of an idle hub arrived (monotonic)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def subscribe(self, match: Match) -> Subscription:
        subscription = Subscription(self, match)
        self._subscribers.add(subscription)
        if self._reading:
            subscription.live.set()  # the hub's positions are behind now, never past it
        else:
            if self._woken_at is None:
                self._woken_at = time.monotonic()
            self._subscribed.set()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    async def _run(self) -> None:
        redis = self.jobs.redis
        while True:
            try:
                await self._refresh_queues()
                if not self._subscribers or not self._positions:
                    self._reading = False
                    if not self._subscribers:
                        self._woken_at = None  # whoever came left before the hub woke
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._subscribed.wait(), QUEUE_REFRESH_S)
                    self._subscribed.clear()
                    continue
                if not self._reading:
                    await self._move_to_wake_up()
                    self._reading = True
                    for subscriber in self._subscribers:
                        subscriber.live.set()
                streams = {QueueKeys(q).events: pos for q, pos in self._positions.items()}
                replies = await redis.xread(streams, count=READ_COUNT,  # type: ignore[arg-type]
                                            block=READ_BLOCK_MS)
            except RedisError as exc:
                logger.warning("reading job events failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            events = [event for stream, entries in replies or []
                      for event in _parse(stream.decode(), entries)]
            for event in sorted(events, key=lambda e: e.position):
                self._positions[event.queue] = event.stream_id  # entries are read whole
                for subscriber in list(self._subscribers):
                    subscriber.offer(event)

    async def _move_to_wake_up(self) -> None:
        """Positions at the moment the first subscriber arrived, on the store's clock (what
        came before, nobody was following; what came since, it must get, although the hub
        only looks now)."""
        seconds, micros = await self.jobs.redis.time()
        waited_ms = (time.monotonic() - (self._woken_at or time.monotonic())) * 1000
        since = seconds * 1000 + micros // 1000 - int(waited_ms) - WAKE_MARGIN_MS
        self._woken_at = None
        for queue in self._positions:
            self._positions[queue] = f"{since}-0"

    async def _refresh_queues(self) -> None:
        if time.monotonic() - self._queues_checked < QUEUE_REFRESH_S:
            return
        self._queues_checked = time.monotonic()
        for queue in {*await self.jobs.queue_names(), *self.known_queues()}:
            # A queue seen for the first time is followed from now on; `since` reads
            # its past directly from the stream.
            self._positions.setdefault(queue, f"{int(time.time() * 1000)}-0")


async def backlog(jobs: JobClient, queues: list[str], since: str) -> list[StreamEvent]:
    """Events after the cursor `since`, oldest first, from every given queue's stream."""
    cursor, _, since_queue = since.partition("/")
    start = (*_order(cursor), since_queue)  # validates
    found: list[StreamEvent] = []
    for queue in queues:
        entries = await jobs.redis.xrange(QueueKeys(queue).events,
                                          min=f"{start[0]}-{start[1]}", max="+")
        found += [e for e in _parse(QueueKeys(queue).events, entries) if e.position > start]
    return sorted(found, key=lambda e: e.position)


async def follow(hub: EventHub, queues: list[str], match: Match,
                 since: str | None) -> AsyncIterator[StreamEvent]:
    """Backlog after `since` (if given), then live events, without gaps or repeats."""
    subscription = hub.subscribe(match)
    try:
        await subscription.started()
        seen: dict[str, tuple[int, int, int]] = {}
        if since is not None:
            for event in await backlog(hub.jobs, queues, since):
                seen[event.queue] = event.order
                if match(event):
                    yield event
        while True:
            event = await subscription.next()
            if event.queue in seen and event.order <= seen[event.queue]:
                continue
            yield event
    finally:
        hub.unsubscribe(subscription)


_decode_batch = msgspec.json.Decoder(list[tuple[str, str, JobEvent]]).decode


def _parse(stream: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[StreamEvent]:
    queue = stream.split("{", 1)[1].split("}", 1)[0]
    parsed = []
    for raw_id, fields in entries:
        stream_id = raw_id.decode()
        batch = fields.get(b"batch")
        if batch is not None:
            parsed += [StreamEvent(stream_id, queue, job, function, event, index)
                       for index, (job, function, event) in enumerate(_decode_batch(batch))]
            continue
        job, function = fields[b"job"].decode(), fields[b"fn"].decode()
        # `events`: one job's events together, as written before batches (still read).
        events = decode_events([fields[b"event"]]) if b"event" in fields \
            else decode_event_list(fields[b"events"])
        parsed += [StreamEvent(stream_id, queue, job, function, event, index)
                   for index, event in enumerate(events)]
    return parsed


def _order(cursor: str) -> tuple[int, int, int]:
    """(ms, seq, index) of `<ms>-<seq>[.<index>]`."""
    try:
        entry, _, index = cursor.partition(".")
        ms, _, seq = entry.partition("-")
        return int(ms), int(seq or 0), int(index or 0)
    except ValueError:
        raise InvalidArgumentError("since", f"{cursor!r} is not an event id") from None
