"""JobClient: submit jobs and read them back, as producers and the API see them."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq.job import Job, Status
from saq.utils import now

from taskmaster.engine.history import JobEvent, decode_events, error_summary
from taskmaster.engine.queue import TaskmasterQueue
from taskmaster.errors import InvalidArgumentError, JobNotFoundError, StoreUnavailableError
from taskmaster.function import QUEUE_NAME, Function, Priority, check_queue_name

MAX_DELAY_S = 366 * 24 * 3600.0
MAX_ATTEMPTS = 100
MAX_TIMEOUT_S = 7 * 24 * 3600.0


class JobStatus(enum.Enum):
    QUEUED = "QUEUED"
    SCHEDULED = "SCHEDULED"
    ACTIVE = "ACTIVE"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = {JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.CANCELLED}


@dataclass(frozen=True, kw_only=True)
class SubmitOptions:
    priority: Priority | None = None
    queue: str | None = None
    delay_s: float | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class JobView:
    """A job as clients see it: one record plus its history."""

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
    enqueued_at_ms: int | None
    started_at_ms: int | None
    completed_at_ms: int | None
    history: list[JobEvent]


def public_id(queue: str, key: str) -> str:
    return f"{queue}:{key}"


def parse_id(job_id: str) -> tuple[str, str]:
    queue, sep, key = job_id.partition(":")
    if not sep or not key or not QUEUE_NAME.fullmatch(queue) or len(key) > 128:
        raise JobNotFoundError(job_id)
    return queue, key


class JobClient:
    """Producer-side access to the queues of one store."""

    def __init__(self, redis: Redis, *, keep_finished_s: int) -> None:
        self.redis = redis
        self.keep_finished_s = keep_finished_s
        self._queues: dict[str, TaskmasterQueue] = {}

    def queue(self, name: str) -> TaskmasterQueue:
        if name not in self._queues:
            self._queues[name] = TaskmasterQueue(self.redis, check_queue_name(name))
        return self._queues[name]

    async def close(self) -> None:
        for queue in self._queues.values():
            await queue._pubsub.close()

    async def submit(self, function: Function, plugin: str, version: str, payload: Any,
                     options: SubmitOptions) -> JobView:
        """Validate and enqueue one job; raises before anything is stored if invalid."""
        function.parse_input(payload)
        queue = self.queue(options.queue or function.queue)
        max_attempts = _bounded_int("maxAttempts", options.max_attempts, function.max_attempts,
                                    1, MAX_ATTEMPTS)
        timeout_s = _bounded_float("timeoutSeconds", options.timeout_s, function.timeout_s,
                                   0.001, MAX_TIMEOUT_S, open_low=True)
        delay_s = _bounded_float("delaySeconds", options.delay_s, 0.0, 0.0, MAX_DELAY_S)
        priority = options.priority or function.priority
        job = Job(
            function=function.name,
            kwargs={"payload": payload if payload is not None else {}},
            retries=max_attempts,
            timeout=timeout_s,  # type: ignore[arg-type]  # SAQ types it int; floats work
            ttl=self.keep_finished_s,
            retry_delay=function.retry_base_s,
            retry_backoff=function.retry_max_s,
            scheduled=math.ceil(now() / 1000 + delay_s) if delay_s else 0,
            meta={"priority": priority.value, "submitted_plugin": plugin,
                  "submitted_version": version},
        )
        try:
            created = await queue.enqueue(job)
        except RedisError as exc:
            raise StoreUnavailableError(f"could not store the job: {exc}") from None
        if created is None:  # pragma: no cover - uuid keys do not collide
            raise StoreUnavailableError("a job with this key already exists")
        return await self.get(public_id(queue.name, job.key))

    async def get(self, job_id: str) -> JobView:
        queue_name, key = parse_id(job_id)
        queue = self.queue(queue_name)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(queue.job_id(key))
                pipe.lrange(queue.history_key(key), 0, -1)
                raw, history = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailableError(f"could not read the job: {exc}") from None
        job = queue.deserialize(raw)
        if job is None:
            raise JobNotFoundError(job_id)
        return view(job, queue.name, decode_events(history))


def view(job: Job, queue: str, history: list[JobEvent]) -> JobView:
    meta = job.meta
    return JobView(
        id=public_id(queue, job.key),
        function=job.function,
        queue=queue,
        priority=Priority(meta.get("priority", Priority.NORMAL.value)),
        status=status_of(job),
        payload=(job.kwargs or {}).get("payload"),
        result=job.result,
        error=error_summary(job.error) if job.status != Status.COMPLETE else None,
        attempts=job.attempts,
        max_attempts=job.retries,
        progress=job.progress,
        plugin=meta.get("plugin"),
        version=meta.get("version"),
        enqueued_at_ms=job.queued or None,
        started_at_ms=job.started or None,
        completed_at_ms=job.completed or None,
        history=history,
    )


def status_of(job: Job) -> JobStatus:
    if job.status in (Status.ACTIVE, Status.ABORTING):
        return JobStatus.ACTIVE
    if job.status == Status.COMPLETE:
        return JobStatus.COMPLETE
    if job.status == Status.FAILED:
        return JobStatus.FAILED
    if job.status == Status.ABORTED:
        return JobStatus.CANCELLED
    waiting_until_ms = max(job.scheduled * 1000, job.meta.get("retry_at_ms") or 0)
    return JobStatus.SCHEDULED if waiting_until_ms > now() else JobStatus.QUEUED


def _bounded_int(name: str, value: int | None, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not low <= value <= high:
        raise InvalidArgumentError(name, f"must be between {low} and {high}, got {value}")
    return value


def _bounded_float(name: str, value: float | None, default: float, low: float, high: float,
                   *, open_low: bool = False) -> float:
    if value is None:
        return default
    if not math.isfinite(value) or value > high or value < low or (open_low and value <= 0):
        bound = "more than 0" if open_low else f"at least {low}"
        raise InvalidArgumentError(name, f"must be {bound} and at most {high}, got {value}")
    return value
