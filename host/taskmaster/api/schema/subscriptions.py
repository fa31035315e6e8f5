"""Subscription root: live job updates, the event firehose, queue statistics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import strawberry

from taskmaster.api.schema.types import Job, JobEvent, JobStatus, QueueInfo
from taskmaster.api.services import services
from taskmaster.engine import metrics
from taskmaster.engine.events import StreamEvent, follow
from taskmaster.engine.jobs import TERMINAL, parse_id
from taskmaster.engine.listing import queue_stats
from taskmaster.errors import InvalidArgumentError

Info = strawberry.Info[dict[str, Any], None]
MIN_INTERVAL_S = 0.2


@strawberry.type
class Subscription:
    @strawberry.subscription(description="The job now, then again after every change;"
                             " completes once it is COMPLETE, FAILED or CANCELLED.")
    async def job_updates(self, info: Info, id: strawberry.ID) -> AsyncGenerator[Job, None]:
        svc = services(info)
        queue, key = parse_id(str(id))
        subscription = svc.hub.subscribe(lambda e: e.queue == queue and e.job_key == key)
        try:
            await subscription.started()
            current = await svc.jobs.get(str(id))
            yield Job.of(current)
            while current.status not in TERMINAL:
                await subscription.next()
                current = await svc.jobs.get(str(id))
                yield Job.of(current)
        finally:
            svc.hub.unsubscribe(subscription)

    @strawberry.subscription(description="Every job event of every process, filtered; pass"
                             " the last `id` you received as `since` to resume without gaps.")
    async def job_events(self, info: Info, queue: str | None = None,
                         function: str | None = None,
                         status: JobStatus | None = None,  # type: ignore[valid-type]
                         since: str | None = None) -> AsyncGenerator[JobEvent, None]:
        svc = services(info)
        queues = [queue] if queue else await svc.jobs.queue_names()

        def match(event: StreamEvent) -> bool:
            return ((queue is None or event.queue == queue)
                    and (function is None or event.function == function)
                    and (status is None or event.status == status))

        async for event in follow(svc.hub, queues, match, since):
            yield JobEvent.of_stream(event)

    @strawberry.subscription(description="Every queue's depths and recent rates, every"
                             " `interval` seconds.")
    async def queue_stats(self, info: Info, interval: float = 2.0
                          ) -> AsyncGenerator[list[QueueInfo], None]:
        if not MIN_INTERVAL_S <= interval <= 3600:
            raise InvalidArgumentError("interval", f"must be between {MIN_INTERVAL_S} and"
                                       f" 3600 seconds, got {interval}")
        svc = services(info)
        while True:
            stats = await queue_stats(svc.jobs)
            infos = []
            for s in stats:
                infos.append(QueueInfo.of(s, await metrics.series(svc.redis, [s.name], 5)))
            yield infos
            await asyncio.sleep(interval)
