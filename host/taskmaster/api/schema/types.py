"""GraphQL object types and enums, built from the engine's and registry's views."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry
from strawberry.scalars import JSON

from taskmaster.engine import jobs as engine_jobs
from taskmaster.engine.events import StreamEvent
from taskmaster.engine.history import JobEvent as EngineEvent
from taskmaster.engine.listing import Page, QueueStats
from taskmaster.engine.metrics import Tally
from taskmaster.function import Priority as FunctionPriority

Priority = strawberry.enum(FunctionPriority, description="Dispatch priority of a job.")
JobStatus = strawberry.enum(engine_jobs.JobStatus, description="Where a job is in its life.")


def as_datetime(ms: int | None) -> datetime | None:
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
    wait_ms: int | None = strawberry.field(description="On `started`: time since submission.")
    run_ms: int | None = strawberry.field(description="On an outcome: how long it ran.")
    id: str | None = strawberry.field(
        default=None, description="In jobEvents: the cursor to pass as `since` to resume.")
    job_id: strawberry.ID | None = None
    queue: str | None = None
    function: str | None = None
    status: JobStatus | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="In jobEvents: the job's status after this event.")

    @classmethod
    def of(cls, event: EngineEvent) -> JobEvent:
        return cls(type=event.type, at=datetime.fromtimestamp(event.at_ms / 1000, tz=UTC),
                   attempt=event.attempt, worker=event.worker, plugin=event.plugin,
                   version=event.version, message=event.message, error=event.error,
                   delay_seconds=event.delay_s, progress=event.progress,
                   wait_ms=event.wait_ms, run_ms=event.run_ms)

    @classmethod
    def of_stream(cls, item: StreamEvent) -> JobEvent:
        event = cls.of(item.event)
        event.id, event.job_id, event.queue = item.id, strawberry.ID(item.job_id), item.queue
        event.function = item.function
        event.status = item.status  # type: ignore[assignment]  # strawberry enum of JobStatus
        return event


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
    events: strawberry.Private[list[EngineEvent]]

    @strawberry.field(
        description="Every transition, oldest first; each attempt records its version.")
    def history(self) -> list[JobEvent]:
        # Converted only when asked for: most selections (a submission's `id`) skip it.
        return [JobEvent.of(e) for e in self.events]

    @classmethod
    def of(cls, job: engine_jobs.JobView) -> Job:
        return cls(
            id=strawberry.ID(job.id), function=job.function, queue=job.queue,
            priority=job.priority, status=job.status, payload=job.payload, result=job.result,
            error=job.error, attempts=job.attempts, max_attempts=job.max_attempts,
            progress=job.progress, plugin=job.plugin, version=job.version,
            idempotency_key=job.idempotency_key,
            enqueued_at=as_datetime(job.enqueued_at_ms),
            scheduled_for=as_datetime(job.scheduled_for_ms),
            started_at=as_datetime(job.started_at_ms),
            completed_at=as_datetime(job.completed_at_ms),
            events=job.history,
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
    completed_per_minute: int = strawberry.field(
        default=0, description="Completed in the last full minute.")
    failed_per_minute: int = strawberry.field(
        default=0, description="Failed attempts (retried or final) in the last full minute.")
    wait_p50_ms: float | None = strawberry.field(
        default=None, description="Submission to start, last 5 minutes (bucket upper bound).")
    wait_p95_ms: float | None = None
    wait_p99_ms: float | None = None

    @classmethod
    def of(cls, stats: QueueStats, recent: list[tuple[int, Tally]] | None = None) -> QueueInfo:
        by = {level.value.lower(): count for level, count in stats.queued.items()}
        info = cls(name=stats.name, queued=sum(stats.queued.values()),
                   queued_by_priority=PriorityCounts(**by), active=stats.active,
                   scheduled=stats.scheduled, dead_lettered=stats.dead_lettered,
                   retained_finished=stats.retained_finished)
        if recent:
            last_full = recent[-2][1] if len(recent) > 1 else recent[-1][1]
            info.completed_per_minute = last_full.counts.get("completed", 0)
            info.failed_per_minute = last_full.counts.get("failed", 0) + \
                last_full.counts.get("retry_scheduled", 0)
            window = Tally()
            for _, tally in recent:
                window.merge(tally)
            info.wait_p50_ms = window.percentile("wait", 0.5)
            info.wait_p95_ms = window.percentile("wait", 0.95)
            info.wait_p99_ms = window.percentile("wait", 0.99)
        return info


@strawberry.type(description="Job counts and durations of one minute.")
class MetricPoint:
    at: datetime
    submitted: int
    started: int
    completed: int
    failed: int
    retried: int
    dead_lettered: int
    cancelled: int
    wait_p50_ms: float | None
    wait_p95_ms: float | None
    wait_p99_ms: float | None
    run_p50_ms: float | None
    run_p95_ms: float | None
    run_p99_ms: float | None

    @classmethod
    def of(cls, at_s: int, tally: Tally) -> MetricPoint:
        c = tally.counts
        return cls(at=datetime.fromtimestamp(at_s, tz=UTC), submitted=c.get("submitted", 0),
                   started=c.get("started", 0), completed=c.get("completed", 0),
                   failed=c.get("failed", 0), retried=c.get("retry_scheduled", 0),
                   dead_lettered=c.get("dead_lettered", 0), cancelled=c.get("cancelled", 0),
                   wait_p50_ms=tally.percentile("wait", 0.5),
                   wait_p95_ms=tally.percentile("wait", 0.95),
                   wait_p99_ms=tally.percentile("wait", 0.99),
                   run_p50_ms=tally.percentile("run", 0.5),
                   run_p95_ms=tally.percentile("run", 0.95),
                   run_p99_ms=tally.percentile("run", 0.99))
