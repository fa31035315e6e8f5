"""JobClient: submit jobs, read them back and act on them, as producers and the API do."""

from __future__ import annotations

import enum
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq.job import Job, Status
from saq.utils import now

from taskmaster.engine.history import JobEvent, decode_events, error_summary, event
from taskmaster.engine.keys import QUEUES_KEY
from taskmaster.engine.queue import LEVEL_NAMES, TaskmasterQueue
from taskmaster.errors import (
    BatchInvalidError,
    InvalidArgumentError,
    JobNotFoundError,
    JobStateError,
    StoreUnavailableError,
    TaskmasterError,
)
from taskmaster.function import QUEUE_NAME, Function, Priority, check_queue_name

MAX_DELAY_S = 366 * 24 * 3600.0
MAX_ATTEMPTS = 100
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_RETRY_DELAY_S = 24 * 3600.0
MAX_IDEMPOTENCY_KEY = 256
MAX_BATCH = 1000
QUEUE_REGISTER_S = 30.0
"""How often a client re-records the queues it uses (cheap insurance against a reset)."""


class JobStatus(enum.Enum):
    QUEUED = "QUEUED"
    SCHEDULED = "SCHEDULED"
    ACTIVE = "ACTIVE"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = {JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.CANCELLED}


@dataclass(frozen=True, kw_only=True)
class Retention:
    keep_completed_s: float = 24 * 3600.0
    keep_dead_s: float = 7 * 24 * 3600.0


class SubmitOptions(msgspec.Struct, frozen=True, kw_only=True):
    priority: Priority | None = None
    queue: str | None = None
    delay_s: float | None = None
    run_at_ms: int | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None
    retry_base_s: float | None = None
    retry_max_s: float | None = None
    retry_jitter: bool | None = None
    idempotency_key: str | None = None


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    """A job as clients see it: its record, where it is, and its history."""

    id: str
    function: str
    queue: str
    priority: Priority
    status: JobStatus
    payload: Any
    result: Any
    error: str | None
    attempts: int
    max_attempts: int
    progress: float
    plugin: str | None
    version: str | None
    idempotency_key: str | None
    enqueued_at_ms: int | None
    scheduled_for_ms: int | None
    started_at_ms: int | None
    completed_at_ms: int | None
    history: list[JobEvent]


def public_id(queue: str, key: str) -> str:
    return f"{queue}:{key}"


def parse_id(job_id: str) -> tuple[str, str]:
    queue, sep, key = job_id.partition(":")
    if not sep or not key or not QUEUE_NAME.fullmatch(queue) or len(key) > 128 or ":" in key:
        raise JobNotFoundError(job_id)
    return queue, key


class JobClient:
    """Producer- and operator-side access to the queues of one store."""

    def __init__(self, redis: Redis, *, retention: Retention | None = None) -> None:
        self.redis = redis
        self.retention = retention or Retention()
        self._queues: dict[str, TaskmasterQueue] = {}
        self._known: dict[str, float] = {}
        """Queue name → when this client last recorded it in the store's set of queues."""

    def queue(self, name: str) -> TaskmasterQueue:
        if name not in self._queues:
            self._queues[name] = TaskmasterQueue(self.redis, check_queue_name(name))
        return self._queues[name]

    async def queue_names(self) -> list[str]:
        """Queues recorded in the store, and those this client has used."""
        stored = await self.redis.smembers(QUEUES_KEY)  # type: ignore[misc]
        return sorted({n.decode() for n in stored} | set(self._queues))

    async def close(self) -> None:
        for queue in self._queues.values():
            await queue._pubsub.close()

    async def _register(self, queue: str) -> None:
        """Record the queue's name for listings, at most every QUEUE_REGISTER_S: a round
        trip before each bulk submission made concurrent ones queue up behind each other."""
        if self._known.get(queue, 0.0) < time.monotonic() - QUEUE_REGISTER_S:
            await self.redis.sadd(QUEUES_KEY, queue)  # type: ignore[misc]
            self._known[queue] = time.monotonic()

    async def submit(self, function: Function, plugin: str, version: str, payload: Any,
                     options: SubmitOptions) -> JobView:
        """Validate and enqueue one job; raises before anything is stored if invalid.

        With an idempotency key already used in the queue, returns that job instead
        (CONFLICT if it was submitted for another function or payload).
        """
        function.parse_input(payload)
        queue = self.queue(options.queue or function.queue)
        job, level, delay_ms, run_at_ms, key = self._build(function, plugin, version,
                                                           payload, options)
        try:
            await self._register(queue.name)
            created, job_key = await queue.submit(job, level, delay_ms=delay_ms,
                                                  run_at_ms=run_at_ms, idempotency_key=key)
        except RedisError as exc:
            raise StoreUnavailableError(f"could not store the job: {exc}") from None
        if created:  # we know what we stored: no second round trip to read it back
            return _submitted(job, queue.name, level, delay_ms, run_at_ms)
        existing = await self.get(public_id(queue.name, job_key))
        if existing.function != function.name or existing.payload != (
                job.kwargs or {}).get("payload"):
            raise JobStateError(
                f"idempotency key {key!r} was used for job {existing.id} with another"
                " function or payload", id=existing.id)
        return existing

    async def submit_many(
            self, items: list[tuple[Function, str, str, Any, SubmitOptions] | TaskmasterError]
    ) -> list[JobView]:
        """Validate every item first (BatchInvalidError lists each problem, including the
        errors a caller already found, such as unknown functions), then enqueue each
        queue's jobs in one transaction."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise InvalidArgumentError("inputs", f"give 1 to {MAX_BATCH} jobs, got {len(items)}")
        built: list[tuple[TaskmasterQueue, tuple[Job, Priority, int, int, str]]] = []
        problems = []
        for index, item in enumerate(items):
            try:
                if isinstance(item, TaskmasterError):
                    raise item
                function, plugin, version, payload, options = item
                function.parse_input(payload)
                queue = self.queue(options.queue or function.queue)
                built.append((queue, self._build(function, plugin, version, payload, options)))
            except TaskmasterError as exc:
                problems.append({"index": index, "code": exc.code, "message": exc.message})
        if problems:
            raise BatchInvalidError(
                f"{len(problems)} of {len(items)} jobs are invalid; none was submitted"
                f" (first: #{problems[0]['index']}: {problems[0]['message']})",
                errors=problems)
        by_queue: dict[str, list[int]] = {}
        for index, (queue, _) in enumerate(built):
            by_queue.setdefault(queue.name, []).append(index)
        views: list[JobView | None] = [None] * len(built)
        existing: dict[str, list[tuple[int, str]]] = {}
        try:
            for name, indexes in by_queue.items():
                queue = self.queue(name)
                await self._register(name)
                results = await queue.submit_many([built[i][1] for i in indexes])
                for i, (created, key) in zip(indexes, results, strict=True):
                    if created:  # we know what we stored: no read-back
                        job, level, delay_ms, run_at_ms, _ = built[i][1]
                        views[i] = _submitted(job, name, level, delay_ms, run_at_ms)
                    else:  # an idempotency key already in use: that job
                        existing.setdefault(name, []).append((i, key))
        except RedisError as exc:
            raise StoreUnavailableError(f"could not store the jobs: {exc}") from None
        for name, found in existing.items():
            read = await self.views(name, [key for _, key in found])
            for (i, _), job_view in zip(found, read, strict=True):
                views[i] = job_view
        return [v for v in views if v is not None]

    def _build(self, function: Function, plugin: str, version: str, payload: Any,
               options: SubmitOptions) -> tuple[Job, Priority, int, int, str]:
        max_attempts = _bounded("maxAttempts", options.max_attempts, function.max_attempts,
                                1, MAX_ATTEMPTS)
        timeout_s = _bounded("timeoutSeconds", options.timeout_s, function.timeout_s,
                             0.001, MAX_TIMEOUT_S)
        delay_s = _bounded("delaySeconds", options.delay_s, 0.0, 0.0, MAX_DELAY_S)
        retry_base_s = _bounded("retryBaseSeconds", options.retry_base_s, function.retry_base_s,
                                0.0, MAX_RETRY_DELAY_S)
        retry_max_s = _bounded("retryMaxSeconds", options.retry_max_s, function.retry_max_s,
                               0.0, MAX_RETRY_DELAY_S)
        if options.delay_s is not None and options.run_at_ms is not None:
            raise InvalidArgumentError("runAt", "give either delaySeconds or runAt, not both")
        key = options.idempotency_key or ""
        if len(key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidArgumentError("idempotencyKey",
                                       f"at most {MAX_IDEMPOTENCY_KEY} characters")
        level = options.priority or function.priority
        jitter = function.retry_jitter if options.retry_jitter is None else options.retry_jitter
        job = Job(
            key=_new_key(),
            function=function.name,
            kwargs={"payload": payload if payload is not None else {}},
            retries=max_attempts,
            timeout=timeout_s,  # SAQ types it int; floats work
            ttl=0,  # retention is ours (done/dead sets), not a Redis TTL
            retry_delay=retry_base_s,
            retry_backoff=retry_max_s,
            meta={"priority": LEVEL_NAMES[level], "max_attempts": max_attempts,
                  "retry_jitter": jitter, "submitted_plugin": plugin,
                  "submitted_version": version, **({"idempotency_key": key} if key else {}),
                  "keep_completed_s": function.keep_completed_s
                  or self.retention.keep_completed_s,
                  "keep_dead_s": function.keep_dead_s or self.retention.keep_dead_s},
        )
        return job, level, int(delay_s * 1000), options.run_at_ms or 0, key

    async def get(self, job_id: str) -> JobView:
        queue_name, key = parse_id(job_id)
        views = await self.views(queue_name, [key])
        if views[0] is None:
            raise JobNotFoundError(job_id)
        return views[0]

    async def views(self, queue_name: str, job_keys: list[str]) -> list[JobView | None]:
        """Many jobs of one queue in one round trip (None for those that are gone)."""
        queue = self.queue(queue_name)
        keys = queue.keys
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in job_keys:
                    pipe.get(keys.job(key))
                    pipe.lrange(keys.history(key), 0, -1)
                    pipe.hget(keys.priority, key)
                    pipe.zscore(keys.scheduled, key)
                    pipe.zscore(keys.active, key)
                replies = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailableError(f"could not read jobs: {exc}") from None
        views: list[JobView | None] = []
        for i in range(len(job_keys)):
            raw, history, level, due, leased = replies[i * 5:(i + 1) * 5]
            job = queue.deserialize(raw)
            views.append(None if job is None else view(
                job, queue.name, decode_events(history),
                level=level.decode() if level else None, scheduled_ms=due,
                active=leased is not None))
        return views

    async def job(self, job_id: str) -> tuple[TaskmasterQueue, Job, JobView]:
        current = await self.get(job_id)
        queue = self.queue(current.queue)
        job = await queue.job(parse_id(job_id)[1])
        if job is None:
            raise JobNotFoundError(job_id)
        return queue, job, current

    async def cancel(self, job_id: str) -> JobView:
        """Cancel a queued or scheduled job now; ask a running one to stop."""
        queue, job, current = await self.job(job_id)
        if current.status in TERMINAL:
            raise JobStateError(f"job {job_id} is already {current.status.value}",
                                id=job_id, status=current.status.value)
        job.status, job.error, job.completed = Status.ABORTED, "cancelled", now()
        if await queue.cancel_job(job) == 0:
            latest = await self.get(job_id)
            raise JobStateError(f"job {job_id} finished ({latest.status.value}) before it"
                                " could be cancelled", id=job_id, status=latest.status.value)
        return await self.get(job_id)

    async def retry(self, job_id: str) -> JobView:
        """Run a FAILED or CANCELLED job again, with a fresh attempt budget."""
        return await self._requeue(job_id, {JobStatus.FAILED, JobStatus.CANCELLED}, "retried")

    async def replay(self, job_id: str) -> JobView:
        """Put a dead-lettered job back as fresh attempts."""
        return await self._requeue(job_id, {JobStatus.FAILED}, "replayed")

    async def _requeue(self, job_id: str, allowed: set[JobStatus], kind: str) -> JobView:
        queue, job, current = await self.job(job_id)
        if current.status not in allowed:
            names = " or ".join(sorted(s.value for s in allowed))
            raise JobStateError(f"only {names} jobs can be {kind}; job {job_id} is"
                                f" {current.status.value}", id=job_id,
                                status=current.status.value)
        budget = int(job.meta.get("max_attempts") or job.retries)
        job.retries = job.attempts + budget
        job.error, job.result, job.completed, job.progress = None, None, 0, 0.0
        if not await queue.requeue(job, current.priority, event(
                kind, attempt=job.attempts,
                message=f"{budget} more attempt(s); previous attempts stay in the history")):
            raise JobStateError(f"job {job_id} was requeued by someone else", id=job_id)
        return await self.get(job_id)

    async def purge(self, job_id: str) -> bool:
        queue_name, key = parse_id(job_id)
        return await self.queue(queue_name).purge(key)

    async def set_priority(self, job_id: str, priority: Priority) -> JobView:
        queue, _, current = await self.job(job_id)
        moved = await queue.set_priority(parse_id(job_id)[1], current.function, priority,
                                         current.priority)
        if moved == -1:
            raise JobStateError(f"job {job_id} is already running; its priority no longer"
                                " matters", id=job_id, status="ACTIVE")
        if moved == 0:
            latest = await self.get(job_id)
            raise JobStateError(f"job {job_id} is {latest.status.value}; only queued or"
                                " scheduled jobs can change priority", id=job_id,
                                status=latest.status.value)
        return await self.get(job_id)


_last_key = [0, 0]
"""Milliseconds and sequence of the last key made here."""


def _entropy() -> Iterator[int]:
    """62-bit numbers from the OS's CSPRNG, read 4 KB at a time: a getrandom() call per
    key cost more than the rest of the key (and it was the API's top entry in a bulk
    submission)."""
    while True:
        block = os.urandom(4096)
        for start in range(0, 4096, 8):
            yield int.from_bytes(block[start:start + 8]) >> 2


_random_62_bits = _entropy().__next__


def _new_key() -> str:
    """A UUIDv7 (RFC 9562): time first, then a sequence within the millisecond, then random
    bits, so keys sort in submission order (the listing breaks ties in the store's
    millisecond by key). Cheaper than SAQ's uuid1."""
    ms = time.time_ns() // 1_000_000
    last_ms, seq = _last_key
    if ms <= last_ms:
        ms, seq = (last_ms, seq + 1) if seq < 0xFFF else (last_ms + 1, 0)
    else:
        seq = 0
    _last_key[:] = [ms, seq]
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | _random_62_bits()
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_SUBMITTED_MESSAGES = {level: f"priority {level.value}" for level in Priority}
_SCHEDULED, _QUEUED = JobStatus.SCHEDULED, JobStatus.QUEUED


def _submitted(job: Job, queue: str, level: Priority, delay_ms: int, run_at_ms: int
               ) -> JobView:
    """The view of a job just stored, from what was stored (what `view` would make of it,
    built directly: submissions are the hot path)."""
    scheduled_ms = run_at_ms or (job.queued + delay_ms if delay_ms else 0)
    return JobView(
        id=f"{queue}:{job.key}", function=job.function, queue=queue, priority=level,
        status=_SCHEDULED if scheduled_ms else _QUEUED,
        payload=(job.kwargs or {}).get("payload"), result=None, error=None,
        attempts=job.attempts, max_attempts=job.retries, progress=job.progress,
        plugin=None, version=None, idempotency_key=job.meta.get("idempotency_key"),
        enqueued_at_ms=job.queued or None, scheduled_for_ms=scheduled_ms or None,
        started_at_ms=None, completed_at_ms=None,
        history=[JobEvent(type="submitted", at_ms=job.queued,
                          message=_SUBMITTED_MESSAGES[level])])


def view(job: Job, queue: str, history: list[JobEvent], *, level: str | None = None,
         scheduled_ms: float | None = None, active: bool = False) -> JobView:
    meta = job.meta
    status = status_of(job, scheduled=scheduled_ms is not None, active=active)
    return JobView(
        id=public_id(queue, job.key),
        function=job.function,
        queue=queue,
        priority=Priority(level or meta.get("priority", Priority.NORMAL.value)),
        status=status,
        payload=(job.kwargs or {}).get("payload"),
        result=job.result,
        error=error_summary(job.error) if status != JobStatus.COMPLETE else None,
        attempts=job.attempts,
        max_attempts=job.retries,
        progress=job.progress,
        plugin=meta.get("plugin"),
        version=meta.get("version"),
        idempotency_key=meta.get("idempotency_key"),
        enqueued_at_ms=job.queued or None,
        scheduled_for_ms=int(scheduled_ms) if scheduled_ms is not None else None,
        started_at_ms=job.started or None,
        completed_at_ms=job.completed or None,
        history=history,
    )


def status_of(job: Job, *, scheduled: bool, active: bool) -> JobStatus:
    if job.status == Status.COMPLETE:
        return JobStatus.COMPLETE
    if job.status == Status.FAILED:
        return JobStatus.FAILED
    if job.status == Status.ABORTED:
        return JobStatus.CANCELLED
    if active:
        return JobStatus.ACTIVE
    return JobStatus.SCHEDULED if scheduled else JobStatus.QUEUED


def _bounded(name: str, value: Any, default: Any, low: float, high: float) -> Any:
    if value is None:
        return default
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise InvalidArgumentError(name, f"must be between {low:g} and {high:g}, got {value}")
    return value
