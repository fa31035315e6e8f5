"""Mutation root."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.scalars import JSON

from taskmaster.api.schema.types import Job, Priority
from taskmaster.api.services import services
from taskmaster.engine.jobs import SubmitOptions

Info = strawberry.Info[dict[str, Any], None]


@strawberry.input(description="What to run, with what, and how.")
class SubmitJobInput:
    function: str
    payload: JSON | None = None
    priority: Priority | None = None  # type: ignore[valid-type]
    queue: str | None = strawberry.field(default=None,
                                         description="Overrides the function's queue.")
    delay_seconds: float | None = None
    max_attempts: int | None = None
    timeout_seconds: float | None = None


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Validate the payload against the function's input"
                         " type and enqueue the job.")
    async def submit_job(self, info: Info, input: SubmitJobInput) -> Job:
        svc = services(info)
        entry = svc.catalog.get(input.function)
        options = SubmitOptions(priority=input.priority, queue=input.queue,
                                delay_s=input.delay_seconds, max_attempts=input.max_attempts,
                                timeout_s=input.timeout_seconds)
        view = await svc.jobs.submit(entry.function, entry.plugin, entry.version,
                                     input.payload, options)
        return Job.of(view)
