"""A worker process: loads the function plugins and runs one SAQ worker per queue."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid

from taskmaster.engine.queue import TaskmasterQueue
from taskmaster.engine.worker import TaskmasterWorker, worker_metadata
from taskmaster.errors import ConfigError
from taskmaster.function import check_queue_name
from taskmaster.registry import load_catalog
from taskmaster.settings import Settings
from taskmaster.store.connection import check_store, create_redis

logger = logging.getLogger(__name__)


def parse_queue_specs(specs: tuple[str, ...], default_concurrency: int) -> dict[str, int]:
    """`("email=20", "reports")` → {"email": 20, "reports": default}."""
    queues: dict[str, int] = {}
    for spec in specs:
        name, sep, number = spec.partition("=")
        try:
            concurrency = int(number) if sep else default_concurrency
        except ValueError:
            raise ConfigError(f"queue {spec!r}: concurrency must be a whole number") from None
        if concurrency < 1:
            raise ConfigError(f"queue {spec!r}: concurrency must be at least 1")
        queues[check_queue_name(name.strip())] = concurrency
    return queues


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve jobs until SIGTERM/SIGINT (or `stop`), then shut down gracefully."""
    if not settings.redis_url:
        raise ConfigError("a worker needs the store's URL: pass --redis-url or set"
                          " TASKMASTER_REDIS_URL (`taskmaster serve` does this for you)")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    catalog = load_catalog()
    queues = parse_queue_specs(settings.worker.queues, settings.worker.concurrency) or {
        name: settings.worker.concurrency for name in sorted(catalog.queues() | {"default"})
    }
    redis = create_redis(settings.redis_url, job_slots=sum(queues.values()))
    try:
        await check_store(redis, settings.redis_url)
        await catalog.start()
        worker_id = f"{uuid.uuid4().hex[:12]}"
        metadata = worker_metadata(catalog.versions())
        workers = [
            TaskmasterWorker(TaskmasterQueue(redis, name), catalog.get, catalog.resources_of,
                             worker_id=worker_id, concurrency=concurrency,
                             shutdown_grace_s=settings.worker.shutdown_grace_s,
                             metadata=metadata)
            for name, concurrency in queues.items()
        ]
        for worker in workers:
            await worker.queue.connect()
        runs = [asyncio.create_task(worker.start()) for worker in workers]
        logger.info("worker %s serving %s with %s", worker_id,
                    ", ".join(f"{q}={c}" for q, c in queues.items()),
                    ", ".join(f"{p} {v}" for p, v in catalog.versions().items()) or "no plugins")
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, *runs], return_when=asyncio.FIRST_COMPLETED)
        logger.info("worker %s stopping", worker_id)
        await asyncio.gather(*(worker.stop() for worker in workers))
        await asyncio.gather(*runs, return_exceptions=True)
        stopping.cancel()
        await catalog.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await redis.aclose()
