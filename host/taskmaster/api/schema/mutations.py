"""Mutation root."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import strawberry

from taskmaster.api.schema.functions import ReloadResult
from taskmaster.api.schema.inputs import DeadLetterFilter, PlainSubmitJobInput, SubmitJobInput
from taskmaster.api.schema.types import Job, Priority
from taskmaster.api.services import Services, services
from taskmaster.engine.deadletters import purge_dead_letters, replay_dead_letters
from taskmaster.engine.jobs import JobView, SubmitOptions
from taskmaster.errors import (
    ForbiddenError,
    InvalidArgumentError,
    TaskmasterError,
)
from taskmaster.function import Function
from taskmaster.registry.install import checked_requirement, pip_install
from taskmaster.registry.live import broadcast_reload, wait_for_convergence

Info = strawberry.Info[dict[str, Any], None]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Validate the payload against the function's input"
                         " type and enqueue the job.")
    async def submit_job(self, info: Info, input: SubmitJobInput) -> Job:
        return Job.of(await submit_one(services(info), input))

    @strawberry.mutation(description="Submit up to 1,000 jobs at once: every one is"
                         " validated first and either all are enqueued or none (INVALID_BATCH"
                         " lists each problem with its index).")
    async def submit_jobs(self, info: Info, inputs: list[SubmitJobInput]) -> list[Job]:
        return [Job.of(view) for view in await submit_many(services(info), inputs)]

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

    @strawberry.mutation(description="Load what is installed now in every host process:"
                         " changed functions drain, then reload; waits for the workers.")
    async def reload_functions(self, info: Info) -> ReloadResult:
        return await _reload(services(info), "reloadFunctions")

    @strawberry.mutation(description="pip-install a function package into the host's"
                         " environment and reload. Off unless reload.install_enabled is set:"
                         " installing a package runs its code as the host's user.")
    async def install_function(self, info: Info, requirement: str) -> ReloadResult:
        svc = services(info)
        settings = svc.settings.reload
        if not settings.install_enabled:
            raise ForbiddenError("installing packages through the API is disabled; set"
                                 " TASKMASTER_RELOAD_INSTALL_ENABLED=true to allow it",
                                 feature="installFunction")
        checked = str(checked_requirement(requirement))
        await asyncio.to_thread(pip_install, [checked], target=settings.install_target,
                                index_url=settings.install_index_url,
                                find_links=settings.install_find_links, only_binary=True)
        return await _reload(svc, f"installFunction {checked}")

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


async def submit_one(svc: Services, given: SubmitJobInput | PlainSubmitJobInput) -> JobView:
    entry = svc.catalog.get(given.function)
    return await svc.jobs.submit(entry.function, entry.plugin, entry.version, given.payload,
                                 given.options())


async def submit_many(svc: Services, inputs: Sequence[SubmitJobInput | PlainSubmitJobInput]
                      ) -> list[JobView]:
    items: list[tuple[Function, str, str, Any, SubmitOptions] | TaskmasterError] = []
    for item in inputs:
        try:
            entry = svc.catalog.get(item.function)
            items.append((entry.function, entry.plugin, entry.version, item.payload,
                          item.options()))
        except TaskmasterError as exc:  # reported with the others, at its index
            items.append(exc)
    return await svc.jobs.submit_many(items)


async def _reload(svc: Services, reason: str) -> ReloadResult:
    since_ms = int(time.time() * 1000)
    await broadcast_reload(svc.redis, reason, sender=svc.live.process_id)
    outcome = await svc.live.reload(retry_rejected=True)
    converged, reports = await wait_for_convergence(
        svc.redis, svc.catalog, since_ms, svc.settings.reload.drain_timeout_s + 10)
    return ReloadResult.of(outcome, converged, svc.catalog, reports)


def _one_of(ids: list[strawberry.ID] | None, flt: DeadLetterFilter | None) -> None:
    if (ids is None) == (flt is None):
        raise InvalidArgumentError("ids", "give either ids or filter (filter: {} means all)")
