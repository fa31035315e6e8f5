"""Replaying and purging dead letters, by id or by filter."""

from __future__ import annotations

from taskmaster.engine.jobs import JobClient, JobStatus
from taskmaster.engine.listing import JobFilter, dead_letters
from taskmaster.errors import JobNotFoundError, JobStateError

MAX_PER_CALL = 10_000


async def _selected(client: JobClient, ids: list[str], flt: JobFilter | None) -> list[str]:
    if flt is None:
        return ids
    selected: list[str] = []
    after = None
    while len(selected) < MAX_PER_CALL:
        page = await dead_letters(client, flt, 500, after)
        selected += [job.id for _, job in page.jobs]
        if not page.has_next_page:
            break
        after = page.end_cursor
    return selected


async def replay_dead_letters(client: JobClient, ids: list[str], flt: JobFilter | None) -> int:
    """Replay each selected dead letter; ids that are not dead letters are skipped."""
    replayed = 0
    for job_id in await _selected(client, ids, flt):
        try:
            await client.replay(job_id)
        except (JobNotFoundError, JobStateError):
            continue
        replayed += 1
    return replayed


async def purge_dead_letters(client: JobClient, ids: list[str], flt: JobFilter | None) -> int:
    removed = 0
    for job_id in await _selected(client, ids, flt):
        try:
            if (await client.get(job_id)).status == JobStatus.FAILED:
                removed += await client.purge(job_id)
        except JobNotFoundError:
            continue
    return removed
