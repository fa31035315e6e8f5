"""Mutation root."""

from __future__ import annotations

from typing import Any

import strawberry

from taskmaster.api.schema.inputs import DeadLetterFilter, SubmitJobInput
from taskmaster.api.schema.types import Job, Priority
from taskmaster.api.services import services
from taskmaster.engine.deadletters import purge_dead_letters, replay_dead_letters
from taskmaster.errors import InvalidArgumentError

Info = strawberry.Info[dict[str, Any], None]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Validate the payload against the function's input"
                         " type and enqueue the job.")
    async def submit_job(self, info: Info, input: SubmitJobInput) -> Job:
        svc = services(info)
        entry = svc.catalog.get(input.function)
        view = await svc.jobs.submit(entry.function, entry.plugin, entry.version,
                                     input.payload, input.options())
        return Job.of(view)

    @strawberry.mutation(description="Cancel a queued or scheduled job at once; a running"
                         " one is asked to stop and ends CANCELLED. Never retried.")
    async def cancel_job(self, info: Info, id: strawberry.ID) -> Job:
        return Job.of(await services(info).jobs.cancel(str(id)))

    @strawberry.mutation(description="Run a FAILED or CANCELLED job again with a fresh"
                         " attempt budget; its history is kept.")
    async def retry_job(self, info: Info, id: strawberry.ID) -> Job:
        return Job.of(await services(info).jobs.retry(str(id)))

    @strawberry.mutation(description="Move a queued or scheduled job to another priority.")
    async def set_job_priority(self, info: Info, id: strawberry.ID,
                               priority: Priority) -> Job:  # type: ignore[valid-type]
        return Job.of(await services(info).jobs.set_priority(str(id), priority))

    @strawberry.mutation(description="Put dead letters back as fresh attempts (by ids or by"
                         " filter); returns how many were replayed.")
    async def replay_dead_letters(self, info: Info, ids: list[strawberry.ID] | None = None,
                                  filter: DeadLetterFilter | None = None) -> int:
        _one_of(ids, filter)
        return await replay_dead_letters(services(info).jobs, [str(i) for i in ids or []],
                                         filter.engine() if filter else None)

    @strawberry.mutation(description="Delete dead letters with their history (by ids or by"
                         " filter); returns how many were removed.")
    async def purge_dead_letters(self, info: Info, ids: list[strawberry.ID] | None = None,
                                 filter: DeadLetterFilter | None = None) -> int:
        _one_of(ids, filter)
        return await purge_dead_letters(services(info).jobs, [str(i) for i in ids or []],
                                        filter.engine() if filter else None)


def _one_of(ids: list[strawberry.ID] | None, flt: DeadLetterFilter | None) -> None:
    if (ids is None) == (flt is None):
        raise InvalidArgumentError("ids", "give either ids or filter (filter: {} means all)")
