"""Query root."""

from __future__ import annotations

from typing import Any

import strawberry

from taskmaster.api.schema.functions import FunctionInfo, PluginInfo, WorkerInfo
from taskmaster.api.schema.inputs import JobFilter
from taskmaster.api.schema.types import Job, JobConnection, QueueInfo
from taskmaster.api.services import services
from taskmaster.engine.listing import JobFilter as EngineFilter
from taskmaster.engine.listing import dead_letters, list_jobs, queue_stats
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

    @strawberry.field(description="Every queue with its depths.")
    async def queues(self, info: Info) -> list[QueueInfo]:
        return [QueueInfo.of(stats) for stats in await queue_stats(services(info).jobs)]

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
