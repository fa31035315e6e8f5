"""Query root."""

from __future__ import annotations

from typing import Any

import strawberry

from taskmaster.api.schema.functions import FunctionInfo, PluginInfo, WorkerInfo
from taskmaster.api.schema.inputs import JobFilter
from taskmaster.api.schema.types import Job, JobConnection, MetricPoint, QueueInfo
from taskmaster.api.services import services
from taskmaster.engine import metrics
from taskmaster.engine.listing import JobFilter as EngineFilter
from taskmaster.engine.listing import dead_letters, list_jobs, queue_stats
from taskmaster.errors import InvalidArgumentError
from taskmaster.registry.live import read_reports

Info = strawberry.Info[dict[str, Any], None]


@strawberry.type
class Query:
    @strawberry.field(description="One job by id; a NOT_FOUND error if there is none.")
    async def job(self, info: Info, id: strawberry.ID) -> Job | None:
        return Job.of(await services(info).jobs.get(str(id)))

    @strawberry.field(description="Retained jobs, newest first, at most 500 per page.")
    async def jobs(self, info: Info, filter: JobFilter | None = None, first: int = 50,
                   after: str | None = None) -> JobConnection:
        engine_filter = filter.engine() if filter else EngineFilter()
        return JobConnection.of(await list_jobs(services(info).jobs, engine_filter, first, after))

    @strawberry.field(description="Dead-lettered jobs (FAILED after their last attempt),"
                      " newest first.")
    async def dead_letters(self, info: Info, queue: str | None = None,
                           function: str | None = None, error_contains: str | None = None,
                           first: int = 50, after: str | None = None) -> JobConnection:
        engine_filter = EngineFilter(queue=queue, function=function,
                                     error_contains=error_contains)
        return JobConnection.of(await dead_letters(services(info).jobs, engine_filter, first,
                                                   after))

    @strawberry.field(description="Every queue with its depths and recent rates.")
    async def queues(self, info: Info) -> list[QueueInfo]:
        svc = services(info)
        return [QueueInfo.of(stats, await metrics.series(svc.redis, [stats.name], 5))
                for stats in await queue_stats(svc.jobs)]

    @strawberry.field(description="Per-minute job counts and durations for charts (all"
                      " queues, or one; all functions, or one), at most 120 minutes back.")
    async def metrics(self, info: Info, queue: str | None = None, function: str | None = None,
                      window_minutes: int = 60) -> list[MetricPoint]:
        if not 1 <= window_minutes <= metrics.MAX_WINDOW_MIN:
            raise InvalidArgumentError("windowMinutes", "must be between 1 and"
                                       f" {metrics.MAX_WINDOW_MIN}, got {window_minutes}")
        svc = services(info)
        queues = [queue] if queue else await svc.jobs.queue_names()
        points = await metrics.series(svc.redis, queues, window_minutes, function=function)
        return [MetricPoint.of(at, tally) for at, tally in points]

    @strawberry.field(description="Every job type this host can run, with the version each"
                      " worker process runs.")
    async def functions(self, info: Info) -> list[FunctionInfo]:
        svc = services(info)
        reports = await read_reports(svc.redis)
        return [FunctionInfo.of(entry, svc.catalog, reports) for entry in svc.catalog.entries()]

    @strawberry.field(description="Installed function distributions, with load errors.")
    def plugins(self, info: Info) -> list[PluginInfo]:
        return PluginInfo.of(services(info).catalog)

    @strawberry.field(description="Live worker processes and what they run.")
    async def workers(self, info: Info) -> list[WorkerInfo]:
        reports = await read_reports(services(info).redis)
        return [WorkerInfo.of(r) for r in reports if r.role == "worker"]
