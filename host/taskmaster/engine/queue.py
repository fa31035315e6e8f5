"""TaskmasterQueue: SAQ's RedisQueue whose jobs move only through our Lua scripts.

Keeps SAQ's Job model and job records; replaces SAQ's single `queued`/`active` lists with
per-priority lists, leased claims, a scheduled set, dead-letter and retention sets (see
keys.py). SAQ entry points that would bypass that bookkeeping raise instead. Each
override names the SAQ version it was checked against; SAQ is pinned to that minor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import msgspec
from redis.asyncio import Redis
from saq.job import Job, Status
from saq.queue.redis import PubSubMultiplexer, RedisQueue
from saq.types import CountKind
from saq.utils import now

from taskmaster.engine.batching import Coalescer
from taskmaster.engine.history import JobEvent, error_summary, event, traceback_tail, wire
from taskmaster.engine.journal import Journal, Op
from taskmaster.engine.keys import LEVELS, PREFIX, QueueKeys
from taskmaster.engine.scripts import Scripts
from taskmaster.function import Priority, check_queue_name

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = (8, 4, 2, 1)
"""Dispatch weights of CRITICAL, HIGH, NORMAL, LOW."""
DEFAULT_MAX_STALLS = 3
RETENTION_BATCH = 500
RETENTION_ROUNDS = 20
DAY_S = 24 * 3600
SUBMIT_BATCH = 500
"""Single submissions per shared script call."""
SUBMIT_IN_FLIGHT = 3
"""Submission calls under way at once (measured, 100 callers one by one: 1 ~21,000 jobs/s,
2 ~26,000, 3 ~34,000, 4 no better)."""
_JOB_DEFAULTS: tuple[tuple[str, Any], ...] = tuple(
    (f.name, f.default if f.default_factory is dataclasses.MISSING else f.default_factory())
    for f in dataclasses.fields(Job) if f.name not in ("queue", "key", "function"))
"""SAQ's Job fields a record leaves out while they hold their default (as Job.to_dict())."""
_PLAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Job)
                   if f.default is not dataclasses.MISSING}
_pack = msgspec.msgpack.Encoder().encode
LEVEL_NAMES = {level: level.value for level in Priority}
"""Each level's name, without the enum's `.value` lookup on the hot path."""
_LEVEL_OF_REPLY = {level.value.encode(): level for level in Priority}
_STATUS_OF = {status.value: status for status in Status}
_SUBMITTED_EVENTS = {level: event("submitted", message=f"priority {level.value}").decode()
                     for level in Priority}


def _dump(data: Mapping[Any, Any]) -> bytes:
    return msgspec.json.encode(data)


def _load(data: bytes | str) -> Any:
    return msgspec.json.decode(data)


@dataclass(frozen=True)
class ServerClock:
    """The store's time at a claim, to stamp what happens soon after it without asking."""

    server_ms: int
    monotonic: float

    def now_ms(self) -> int:
        return self.server_ms + int((time.monotonic() - self.monotonic) * 1000)


@dataclass(slots=True)
class Claimed:
    """A job this worker now holds a lease on (not frozen: built once per job, and a frozen
    dataclass sets each field through object.__setattr__)."""

    job: Job
    token: str
    level: Priority
    stalls: int
    attempt: int
    """This attempt's number, issued by the claim."""
    clock: ServerClock

    @property
    def suspect(self) -> bool:
        """Recovered from a dead worker: it runs alone in its process."""
        return self.stalls > 0


@dataclass(frozen=True)
class Claim:
    jobs: list[Claimed]
    wait_ms: int
    """Until the next scheduled job is due; -1 if none is."""
    suspects: int
    """Recovered jobs waiting for a worker that runs nothing else."""


def _created(reply: list[Any]) -> tuple[bool, str]:
    created, key = reply
    return bool(created), key.decode() if isinstance(key, bytes) else str(key)


def keep_ms(job: Job, outcome: str) -> int:
    """How long a finished job stays, from its submission's retention settings."""
    seconds = job.meta.get("keep_dead_s" if outcome == "dead" else "keep_completed_s")
    default = 7 * DAY_S if outcome == "dead" else DAY_S
    return int(float(seconds if seconds is not None else default) * 1000)


class TaskmasterQueue(RedisQueue):
    """One named queue in Redis/Valkey."""

    def __init__(self, redis: Redis, name: str = "default", *,
                 weights: Sequence[int] = DEFAULT_WEIGHTS,
                 max_stalls: int = DEFAULT_MAX_STALLS, keep_completed_count: int = 0) -> None:
        check_queue_name(name)
        super().__init__(redis, name=name, dump=_dump, load=_load)
        self.keys = QueueKeys(name)
        self.prefix = self.keys.key("")
        self._pubsub = PubSubMultiplexer(redis.pubsub(), prefix=self.keys.job(""))
        self.scripts = Scripts.register(redis)
        self.journal = Journal(self)
        self._submissions: Coalescer[list[Any], tuple[bool, str]] = Coalescer(
            self._enqueue_batch, SUBMIT_BATCH, in_flight=SUBMIT_IN_FLIGHT)
        if len(weights) != len(LEVELS) or min(weights) < 1:
            raise ValueError(f"queue {name}: four weights of at least 1 are needed, got {weights}")
        self.weights = tuple(weights)
        self.max_stalls = max_stalls
        self.keep_completed_count = keep_completed_count
        self.runnable_functions: Callable[[], set[str]] | None = None
        """Job types a worker here can run now; the sweep puts their parked jobs back."""

    # -- key layout (saq 0.26.4: namespace, job_id, job_key_from_id) --
    def namespace(self, key: str) -> str:
        return f"{PREFIX}:{{{self.name}}}:{key}"

    def job_id(self, job_key: str) -> str:
        return self.namespace(f"job:{job_key}")

    def job_key_from_id(self, job_id: str) -> str:
        return job_id[len(self.job_id("")):]

    # -- transitions --
    async def submit(self, job: Job, level: Priority, *, delay_ms: int = 0, run_at_ms: int = 0,
                     idempotency_key: str = "") -> tuple[bool, str]:
        """Store and enqueue a new job; (False, existing key) if its idempotency key is taken.

        Submissions made in the same loop turn share one script call."""
        return await self._submissions.add(
            self._enqueue_item(job, level, delay_ms, run_at_ms, idempotency_key))

    async def submit_many(self, jobs: list[tuple[Job, Priority, int, int, str]]
                          ) -> list[tuple[bool, str]]:
        """Enqueue a batch in one script call: all of them or none."""
        return await self._enqueue_batch([self._enqueue_item(*job) for job in jobs])

    def _enqueue_item(self, job: Job, level: Priority, delay_ms: int, run_at_ms: int,
                      idempotency_key: str) -> list[Any]:
        job.queue = self
        job.status = Status.QUEUED
        job.queued = job.queued or now()
        # Text, not bytes: the script's msgpack decoder knows no binary type.
        return [job.key, self.serialize(job).decode(), _SUBMITTED_EVENTS[level],
                LEVEL_NAMES[level], delay_ms, run_at_ms, idempotency_key, job.function]

    async def _enqueue_batch(self, items: list[list[Any]]) -> list[tuple[bool, str]]:
        keys = self.keys
        replies = await self.scripts.enqueue(
            keys=[*keys.all_queued, keys.scheduled, keys.priority, keys.index,
                  keys.idempotency, keys.idempotency_of, keys.wake],
            args=[self.prefix, _pack(items)])
        return [_created(reply) for reply in replies]

    async def claim(self, count: int, lease_ms: int, worker_id: str, *,
                    idle: bool = False) -> Claim:
        """Lease up to `count` jobs, fairly across priorities.

        A worker running nothing (`idle`) is given one recovered suspect instead, if any.
        """
        keys, args = self._claim_call(count, lease_ms, worker_id, idle)
        return self._claimed(await self.scripts.claim(keys=keys, args=args))

    async def claim_when_woken(self, timeout_s: float, count: int, lease_ms: int,
                               worker_id: str, *, idle: bool = False) -> Claim:
        """`claim()` once a wake token arrives or `timeout_s` passes, in one round trip.

        The claim is pipelined behind a BLPOP on the wake list, so the server runs it the
        moment the block ends. Closing the connection while blocked discards both.
        """
        keys, args = self._claim_call(count, lease_ms, worker_id, idle)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.blpop([self.keys.wake], timeout=timeout_s)
            await self.scripts.claim(keys=keys, args=args, client=pipe)
            _, reply = await pipe.execute()
        return self._claimed(reply)

    def _claim_call(self, count: int, lease_ms: int, worker_id: str,
                    idle: bool) -> tuple[list[str], list[Any]]:
        keys = self.keys
        return ([*keys.all_queued, keys.scheduled, keys.active, keys.lease, keys.priority,
                 keys.swrr, keys.stalls, keys.suspects, keys.attempts],
                [count, lease_ms, worker_id, *self.weights, self.prefix, int(idle)])

    def _claimed(self, reply: list[Any]) -> Claim:
        rows, token, wait_ms, suspects, server_ms = reply
        clock = ServerClock(int(server_ms), time.monotonic())
        token = token.decode() if rows else ""
        claimed = []
        for key, level, record, stalls, attempt in rows:
            job = self.deserialize(record) if record else None
            if job is None:  # purged between submission and claim: let the lease lapse
                logger.warning("claimed job %s has no record", key.decode())
                continue
            claimed.append(Claimed(job, token, _LEVEL_OF_REPLY[level], int(stalls),
                                   int(attempt), clock))
        return Claim(claimed, int(wait_ms), int(suspects))

    def start_attempt(self, job: Job, token: str, started: JobEvent, at_ms: int) -> None:
        """Record that an attempt began (written with its outcome if that comes soon)."""
        self.journal.start(Op("W", job.key, token, job.function, job,
                              [wire(started, at_ms)]))

    async def record(self, job: Job, token: str, history_event: JobEvent | None = None) -> bool:
        """Write the record of a job this worker holds; False if its lease was lost."""
        return bool(await self.journal.apply(Op(
            "W", job.key, token, job.function, job,
            [wire(history_event)] if history_event else [])))

    def finish_attempt(self, job: Job, token: str, *events: JobEvent) -> asyncio.Future[int]:
        """Queue a terminal outcome (COMPLETE, FAILED → dead letters, ABORTED); the future
        says 0 if the lease was lost. An empty token finishes a job nobody holds
        (recovered from a dead worker)."""
        dead = job.status == Status.FAILED
        return self.journal.apply(Op(
            "D" if dead else "C", job.key, token, job.function, job,
            [wire(e) for e in events], keep_ms(job, "dead" if dead else "done")))

    def give_back(self, claimed: Claimed) -> asyncio.Future[int]:
        """Return a job claimed but never started (the worker is stopping) to its queue,
        its attempt number unspent, with no trace in its history."""
        return self.journal.apply(Op("Q", claimed.job.key, claimed.token,
                                     claimed.job.function, None, [], 0,
                                     claimed.level.value))

    def retry_attempt(self, job: Job, token: str, level: Priority, delay_ms: int,
                      history_event: JobEvent, *, spent: bool = True) -> asyncio.Future[int]:
        """Queue the job's return for another attempt; `spent=False` gives this one back."""
        return self.journal.apply(Op(
            "R" if spent else "Q", job.key, token, job.function, job,
            [wire(history_event)], delay_ms, level.value))

    async def park(self, job: Job, token: str, reason: str | None) -> bool:
        """Set a claimed job aside until its function can run here; no attempt is spent."""
        job.status = Status.QUEUED
        return bool(await self.journal.apply(Op(
            "P", job.key, token, job.function, job,
            [wire(JobEvent(type="waiting", message=reason))] if reason else [])))

    def serialize(self, job: Job) -> bytes:
        """SAQ's Job.to_dict() as JSON, without its per-call field introspection."""
        fields = job.__dict__
        record = {"function": job.function, "key": job.key}
        if job.queue is not None:
            record["queue"] = job.queue.name
        for name, default in _JOB_DEFAULTS:
            value = fields[name]
            if value is not default and value != default:
                record[name] = value
        return _dump(record)

    def deserialize(self, payload: dict[str, Any] | str | bytes | None,
                    status: Status | str | None = None) -> Job | None:
        """SAQ's Queue.deserialize() (saq 0.26.4) without the dataclass constructor: the
        same Job, its fields set from the record over the defaults."""
        if not payload:
            return None
        record = payload if isinstance(payload, dict) else _load(payload)
        if record.pop("queue") != self.name:
            raise ValueError(f"Job {record} fetched by wrong queue: {self.name}")
        job: Job = Job.__new__(Job)
        fields = job.__dict__
        fields.update(_PLAIN_DEFAULTS)
        fields.update(record)
        if "meta" not in record:
            fields["meta"] = {}
        fields["queue"] = self
        found = status or fields["status"]
        fields["status"] = found if isinstance(found, Status) else _status(found)
        return job

    async def cancel_job(self, cancelled: Job) -> int:
        """1: cancelled now; 2: running, cancel requested; 0: already finished."""
        keys = self.keys
        return int(await self.scripts.cancel(
            keys=[keys.job(cancelled.key), keys.history(cancelled.key), *keys.all_queued,
                  keys.scheduled, keys.active, keys.priority, keys.done, keys.cancel,
                  keys.suspects, keys.parked(cancelled.function)],
            args=[cancelled.key, self.serialize(cancelled), event("cancelled"),
                  keep_ms(cancelled, "done"), event("cancel_requested"), cancelled.function,
                  self.prefix]))

    async def set_priority(self, key: str, function: str, level: Priority,
                           old: Priority) -> int:
        """1 moved, 2 unchanged, -1 running, 0 finished."""
        keys = self.keys
        return int(await self.scripts.set_priority(
            keys=[keys.history(key), keys.priority, *keys.all_queued, keys.scheduled,
                  keys.active, keys.suspects, keys.parked(function)],
            args=[key, level.value, event("priority_changed",
                                          message=f"{old.value} -> {level.value}"),
                  function, self.prefix]))

    async def requeue(self, job: Job, level: Priority, history_event: bytes) -> bool:
        """Put a finished job back as a fresh attempt; False if it is not finished."""
        keys = self.keys
        job.status = Status.QUEUED
        return bool(await self.scripts.requeue(
            keys=[keys.job(job.key), keys.history(job.key), keys.dead, keys.done,
                  keys.queued(level), keys.priority, keys.wake, keys.attempts],
            args=[job.key, self.serialize(job), history_event, level.value, job.function,
                  self.prefix, job.attempts]))

    async def unpark(self, runnable: set[str]) -> int:
        """Put back the parked jobs of every job type in `runnable`; returns how many."""
        keys = self.keys
        parked = {m.decode() for m in await self.redis.smembers(keys.parked_functions)}  # type: ignore[misc]
        moved = 0
        for function in sorted(parked & runnable):
            moved += int(await self.scripts.unpark(
                keys=[keys.parked(function), keys.parked_functions, keys.priority,
                      *keys.all_queued, keys.wake],
                args=[function]))
        return moved

    async def purge(self, key: str) -> bool:
        keys = self.keys
        return bool(await self.scripts.purge(
            keys=[keys.dead, keys.index, keys.idempotency, keys.idempotency_of],
            args=[self.prefix, key]))

    async def apply_retention(self) -> int:
        keys = self.keys
        return int(await self.scripts.retention(
            keys=[keys.done, keys.dead, keys.index, keys.idempotency, keys.idempotency_of],
            args=[self.prefix, self.keep_completed_count, RETENTION_BATCH]))

    async def reclaim(self) -> list[str]:
        """Requeue jobs whose lease expired; dead-letter poison jobs. Returns requeued keys."""
        keys = self.keys
        requeued, poison, cancelled = await self.scripts.reclaim(
            keys=[keys.active, keys.lease, keys.stalls, keys.priority, keys.suspects,
                  keys.wake, keys.cancel],
            args=[self.max_stalls, self.prefix])
        for key, stalls in poison:
            await self._end_abandoned(key.decode(), Status.FAILED,
                                      f"worker died {int(stalls)} times running it (poison job)")
        for key in cancelled:
            await self._end_abandoned(key.decode(), Status.ABORTED, "cancelled")
        recovered = [k.decode() for k in requeued]
        if recovered:
            logger.warning("recovered %d job(s) of queue %s from dead workers: %s",
                           len(recovered), self.name, ", ".join(recovered))
        return recovered

    async def _end_abandoned(self, key: str, status: Status, error: str) -> None:
        job = await self.job(key)
        if job is None:
            return
        job.status, job.error, job.completed = status, error, now()
        if status == Status.FAILED:
            await self.finish_attempt(job, "", JobEvent(type="failed", attempt=job.attempts,
                                                        error=error),
                                      JobEvent(type="dead_lettered", message=error))
        else:
            await self.finish_attempt(job, "", JobEvent(type="cancelled", attempt=job.attempts))

    # -- SAQ upkeep entry points (saq 0.26.4) --
    async def schedule(self, lock: int = 1) -> list[str]:
        return []  # due jobs are promoted inside every claim

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        recovered = await self.reclaim()
        if self.runnable_functions is not None:
            await self.unpark(self.runnable_functions())
        # Keep up with a fast stream of short-lived jobs, in bounded steps.
        for _ in range(RETENTION_ROUNDS):
            if await self.apply_retention() < RETENTION_BATCH:
                break
        return recovered

    async def count(self, kind: CountKind) -> int:  # saq 0.26.4
        keys = self.keys
        if kind == "queued":
            parked = await self.redis.smembers(keys.parked_functions)  # type: ignore[misc]
            lists = [*keys.all_queued, keys.suspects,
                     *(keys.parked(f.decode()) for f in parked)]
            return sum([int(await self.redis.llen(k)) for k in lists])  # type: ignore[misc]
        if kind == "active":
            return int(await self.redis.zcard(keys.active))
        if kind == "incomplete":
            return await self.count("queued") + await self.count("active") + int(
                await self.redis.zcard(keys.scheduled))
        raise ValueError(f"can't count unknown kind {kind}")

    async def _enqueue(self, job: Job) -> Job | None:  # saq 0.26.4: Queue.enqueue()
        level = Priority(job.meta.get("priority", Priority.NORMAL.value))
        delay_ms = max(0, job.scheduled * 1000 - now()) if job.scheduled else 0
        created, _ = await self.submit(job, level, delay_ms=delay_ms)
        return job if created else None

    def _bypass(self, name: str) -> NoReturn:
        raise NotImplementedError(
            f"TaskmasterQueue.{name}: jobs move through TaskmasterWorker and JobClient,"
            " which keep leases, history and dead letters consistent")

    async def dequeue(self, timeout: float = 0.0,  # noqa: ASYNC109 - SAQ's signature
                      poll_interval: float = 0.0) -> Job | None:
        self._bypass("dequeue")

    async def _update(self, job: Job, status: Status | None = None, **kwargs: Any) -> None:
        self._bypass("update")

    async def _retry(self, job: Job, error: str | None) -> None:
        self._bypass("retry")

    async def _finish(self, job: Job, status: Status, *, result: Any = None,
                      error: str | None = None) -> None:
        self._bypass("finish")

    async def abort(self, job: Job, error: str, ttl: float = 5) -> None:
        self._bypass("abort")


def _status(name: str) -> Status:
    found = _STATUS_OF.get(name)
    return found if found is not None else Status[name.upper()]  # as SAQ's __post_init__


def failure_events(job: Job, error: str | None, *, dead: bool) -> list[JobEvent]:
    """History for a failed attempt: `failed` (+ `dead_lettered` when it was the last)."""
    events = [JobEvent(type="failed", attempt=job.attempts, worker=job.worker_id,
                       plugin=job.meta.get("plugin"), version=job.meta.get("version"),
                       error=error_summary(error), traceback=traceback_tail(error),
                       run_ms=run_ms(job))]
    if dead:
        events.append(JobEvent(type="dead_lettered", attempt=job.attempts,
                               message=f"after {job.attempts} attempt(s)"))
    return events


def run_ms(job: Job) -> int | None:
    return max(0, now() - job.started) if job.started else None
