"""GraphQL object types and enums, built from the engine's and registry's views."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry
from strawberry.scalars import JSON

from taskmaster.engine import jobs as engine_jobs
from taskmaster.engine.history import JobEvent as EngineEvent
from taskmaster.engine.listing import Page, QueueStats
from taskmaster.function import Priority as FunctionPriority

Priority = strawberry.enum(FunctionPriority, description="Dispatch priority of a job.")
JobStatus = strawberry.enum(engine_jobs.JobStatus, description="Where a job is in its life.")


def _time(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


@strawberry.type(description="One entry of a job's history.")
class JobEvent:
    type: str = strawberry.field(description="submitted, started, progress, retry_scheduled,"
                                 " completed, failed or cancelled.")
    at: datetime
    attempt: int | None
    worker: str | None
    plugin: str | None
    version: str | None
    message: str | None
    error: str | None
    delay_seconds: float | None
    progress: float | None

    @classmethod
    def of(cls, event: EngineEvent) -> JobEvent:
        return cls(type=event.type, at=datetime.fromtimestamp(event.at_ms / 1000, tz=UTC),
                   attempt=event.attempt, worker=event.worker, plugin=event.plugin,
                   version=event.version, message=event.message, error=event.error,
                   delay_seconds=event.delay_s, progress=event.progress)


@strawberry.type(description="A job: one execution request of a function, and its outcome.")
class Job:
    id: strawberry.ID
    function: str
    queue: str
    priority: Priority  # type: ignore[valid-type]
    status: JobStatus  # type: ignore[valid-type]
    payload: JSON | None
    result: JSON | None
    error: str | None = strawberry.field(description="The last attempt's error, if it failed.")
    attempts: int
    max_attempts: int
    progress: float | None
    plugin: str | None = strawberry.field(
        description="Distribution that ran the latest attempt.")
    version: str | None = strawberry.field(
        description="Version of that distribution; each attempt's is in `history`.")
    idempotency_key: str | None
    enqueued_at: datetime | None
    scheduled_for: datetime | None = strawberry.field(
        description="When a SCHEDULED job (delayed, or waiting to retry) becomes due.")
    started_at: datetime | None
    completed_at: datetime | None
    history: list[JobEvent] = strawberry.field(
        description="Every transition, oldest first; each attempt records its version.")

    @classmethod
    def of(cls, job: engine_jobs.JobView) -> Job:
        return cls(
            id=strawberry.ID(job.id), function=job.function, queue=job.queue,
            priority=job.priority, status=job.status, payload=job.payload, result=job.result,
            error=job.error, attempts=job.attempts, max_attempts=job.max_attempts,
            progress=job.progress, plugin=job.plugin, version=job.version,
            idempotency_key=job.idempotency_key, enqueued_at=_time(job.enqueued_at_ms),
            scheduled_for=_time(job.scheduled_for_ms), started_at=_time(job.started_at_ms),
            completed_at=_time(job.completed_at_ms),
            history=[JobEvent.of(e) for e in job.history],
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class JobEdge:
    cursor: str
    node: Job


@strawberry.type(description="A page of jobs, newest first.")
class JobConnection:
    edges: list[JobEdge]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page) -> JobConnection:
        return cls(edges=[JobEdge(cursor=cursor, node=Job.of(job)) for cursor, job in page.jobs],
                   page_info=PageInfo(has_next_page=page.has_next_page,
                                      end_cursor=page.end_cursor))


@strawberry.type(description="Jobs waiting per priority level.")
class PriorityCounts:
    critical: int
    high: int
    normal: int
    low: int


@strawberry.type(description="Depths of one queue.")
class QueueInfo:
    name: str
    queued: int = strawberry.field(description="Waiting to run now, all levels.")
    queued_by_priority: PriorityCounts
    active: int
    scheduled: int = strawberry.field(description="Delayed or waiting to retry.")
    dead_lettered: int
    retained_finished: int = strawberry.field(
        description="Completed and cancelled jobs kept for their retention period.")

    @classmethod
    def of(cls, stats: QueueStats) -> QueueInfo:
        by = {level.value.lower(): count for level, count in stats.queued.items()}
        return cls(name=stats.name, queued=sum(stats.queued.values()),
                   queued_by_priority=PriorityCounts(**by), active=stats.active,
                   scheduled=stats.scheduled, dead_lettered=stats.dead_lettered,
                   retained_finished=stats.retained_finished)
