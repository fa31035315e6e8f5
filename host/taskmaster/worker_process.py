"""A worker process: loads the function plugins and serves its queues with one fetch loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid

from taskmaster.aio import freeze_startup_heap
from taskmaster.engine.dispatch import BLOCK_END_S, Dispatcher
from taskmaster.engine.keys import QUEUES_KEY
from taskmaster.engine.lease import LeaseKeeper
from taskmaster.engine.queue import DEFAULT_WEIGHTS, TaskmasterQueue
from taskmaster.engine.worker import TaskmasterWorker, worker_metadata
from taskmaster.errors import ConfigError
from taskmaster.function import check_queue_name
from taskmaster.registry import load_catalog
from taskmaster.registry.live import LiveFunctions, broadcast_reload
from taskmaster.settings import Settings, WorkerSettings
from taskmaster.store.connection import check_store, create_redis

logger = logging.getLogger(__name__)

DRAIN_POLL_S = 0.02


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


def parse_weights(specs: tuple[str, ...]) -> dict[str | None, tuple[int, ...]]:
    """`("8:4:2:1", "email=1:1:1:1")` → {None: (8,4,2,1), "email": (1,1,1,1)}."""
    weights: dict[str | None, tuple[int, ...]] = {None: DEFAULT_WEIGHTS}
    for spec in specs:
        name, sep, numbers = spec.rpartition("=")
        try:
            parsed = tuple(int(n) for n in numbers.split(":"))
        except ValueError:
            parsed = ()
        if len(parsed) != 4 or min(parsed) < 1:
            raise ConfigError(f"weights {spec!r}: four whole numbers of at least 1 are needed,"
                              " like 8:4:2:1 (CRITICAL:HIGH:NORMAL:LOW)")
        weights[check_queue_name(name) if sep else None] = parsed
    return weights


def check_worker_settings(worker: WorkerSettings) -> None:
    """Refuse bad queue or weight specs before anything starts (ConfigError)."""
    parse_queue_specs(worker.queues, worker.concurrency)
    parse_weights(worker.weights)


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve jobs until SIGTERM/SIGINT (or `stop`), then shut down gracefully."""
    if not settings.redis_url:
        raise ConfigError("a worker needs the store's URL: pass --redis-url or set"
                          " TASKMASTER_REDIS_URL (`taskmaster serve` does this for you)")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    worker = settings.worker
    catalog = load_catalog(initialise=True)
    queues = parse_queue_specs(worker.queues, worker.concurrency) or {
        name: worker.concurrency for name in sorted(catalog.queues() | {"default"})
    }
    weights = parse_weights(worker.weights)
    redis = create_redis(settings.redis_url, job_slots=sum(queues.values()))
    worker_id = uuid.uuid4().hex[:12]
    dispatcher = Dispatcher(redis, worker_id=worker_id, lease_s=worker.lease_s)
    workers: list[TaskmasterWorker] = []

    def lease_lost(queue: str, key: str) -> None:
        for w in workers:
            if w.tm_queue.name == queue:
                w.lease_lost(key)

    leases = LeaseKeeper(settings.redis_url, worker.lease_s, lease_lost)

    async def drain(functions: set[str]) -> None:
        """Wait for running executions of these job types; requeue them past the timeout."""
        deadline = loop.time() + settings.reload.drain_timeout_s
        requeued = False
        while any(w.running_functions() & functions for w in workers):
            if not requeued and loop.time() >= deadline:
                for w in workers:
                    w.requeue_running(functions, "requeued unspent: the reload's drain"
                                      f" timeout ({settings.reload.drain_timeout_s:g}s) passed")
                requeued = True
            await asyncio.sleep(DRAIN_POLL_S)

    async def resumed(functions: set[str]) -> None:
        for w in workers:
            await w.tm_queue.unpark(functions)

    live = LiveFunctions(catalog, redis, settings.reload, role="worker",
                         process_id=worker_id, concurrency=dict(queues), drain=drain,
                         resumed=resumed,
                         current_jobs=lambda: [job for w in workers for job in w.running_jobs()])
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(
        broadcast_reload(redis, f"SIGHUP to worker {worker_id}")))
    try:
        await check_store(redis, settings.redis_url)
        await redis.sadd(QUEUES_KEY, *queues)  # type: ignore[misc]
        await catalog.start()
        metadata = worker_metadata(catalog.versions())
        for name, concurrency in queues.items():
            queue = TaskmasterQueue(redis, name, weights=weights.get(name, weights[None]),
                                    max_stalls=worker.max_stalls,
                                    keep_completed_count=settings.jobs.keep_completed_count)
            await queue.connect()
            workers.append(TaskmasterWorker(
                queue, catalog, dispatcher=dispatcher,
                leases=leases, worker_id=worker_id, concurrency=concurrency,
                shutdown_grace_s=worker.shutdown_grace_s, lease_s=worker.lease_s,
                metadata=metadata))
        leases.start()
        await live.start()
        await resumed(catalog.active_functions())  # jobs that waited for what we now run
        freeze_startup_heap()
        fetching = asyncio.create_task(dispatcher.run())
        runs = [asyncio.create_task(w.start()) for w in workers]
        logger.info("worker %s serving %s with %s", worker_id,
                    ", ".join(f"{q}={c}" for q, c in queues.items()),
                    ", ".join(f"{p} {v}" for p, v in catalog.versions().items()) or "no plugins")
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, fetching, *runs], return_when=asyncio.FIRST_COMPLETED)
        logger.info("worker %s stopping", worker_id)
        dispatcher.close()
        await asyncio.gather(*(w.stop() for w in workers))
        await asyncio.gather(*runs, return_exceptions=True)
        # It ends by itself once closed, giving back what it claimed too late.
        await asyncio.wait([fetching], timeout=BLOCK_END_S + 1)
        fetching.cancel()
        await asyncio.gather(fetching, return_exceptions=True)
        stopping.cancel()
        await catalog.stop()
    finally:
        await live.stop()
        leases.stop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for w in workers:
            await w.tm_queue._pubsub.close()
        await redis.aclose()
