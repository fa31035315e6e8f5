"""LiveFunctions: keeps one process's catalog in step with the installed packages.

Three triggers lead to the same `reload()`: a broadcast on the store's reload channel
(GraphQL `reloadFunctions`, the CLI, SIGHUP to any host process), and, when watching is on,
a change of the installed function distributions that stays the same for two scans in a
row (pip may be mid-write) and is not under the install lock. Each process publishes a
report of what it runs, so the API can show which worker runs which version and whether
they have converged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from taskmaster.registry.catalog import Catalog, Drain, ReloadOutcome, Resumed
from taskmaster.registry.discovery import discover
from taskmaster.registry.install import install_lock
from taskmaster.settings import ReloadSettings

logger = logging.getLogger(__name__)

RELOAD_CHANNEL = "taskmaster:reload"
SENDER = " | from "
PROCESSES_KEY = "taskmaster:processes"
REPORT_INTERVAL_S = 5.0
REPORT_STALE_S = 20.0


@dataclass(frozen=True, kw_only=True)
class ProcessReport:
    """What one API or worker process runs, as it last said."""

    id: str
    role: str
    host: str
    pid: int
    queues: list[str]
    concurrency: dict[str, int]
    versions: dict[str, str]
    fingerprints: dict[str, str]
    states: dict[str, str]
    load_errors: dict[str, str]
    current_jobs: list[str]
    heartbeat_ms: int

    @classmethod
    def parse(cls, raw: bytes) -> ProcessReport:
        return cls(**json.loads(raw))


@dataclass
class LiveFunctions:
    catalog: Catalog
    redis: Redis
    settings: ReloadSettings
    role: str
    process_id: str
    concurrency: dict[str, int] = field(default_factory=dict)
    drain: Drain | None = None
    resumed: Resumed | None = None
    current_jobs: Callable[[], list[str]] = list
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        await self.report()
        self._tasks = [asyncio.create_task(self._listen()),
                       asyncio.create_task(self._keep_reporting())]
        if self.settings.watch:
            self._tasks.append(asyncio.create_task(self._watch()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(RedisError):
            await self.redis.hdel(PROCESSES_KEY, self.process_id)  # type: ignore[misc]

    async def reload(self, *, retry_rejected: bool = False) -> ReloadOutcome:
        outcome = await self.catalog.sync(self.drain, self.resumed,
                                          retry_rejected=retry_rejected)
        await self.report()
        return outcome

    async def report(self) -> None:
        report = ProcessReport(
            id=self.process_id, role=self.role, host=socket.gethostname(), pid=os.getpid(),
            queues=sorted(self.concurrency), concurrency=self.concurrency,
            versions=self.catalog.versions(),
            fingerprints=self.catalog.fingerprints(),
            states={e.function.name: self.catalog.state(e.function.name).value
                    for e in self.catalog.entries()},
            load_errors={p.name: (self.catalog.load_error(p.name) or "").splitlines()[0]
                         for p in self.catalog.plugins if self.catalog.load_error(p.name)},
            current_jobs=self.current_jobs(), heartbeat_ms=int(time.time() * 1000))
        try:
            await self.redis.hset(PROCESSES_KEY, self.process_id,  # type: ignore[misc]
                                  json.dumps(report.__dict__))
        except RedisError as exc:
            logger.warning("could not publish this process's report: %s", exc)

    async def _keep_reporting(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            await self.report()

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(RELOAD_CHANNEL)
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    reason, _, sender = message["data"].decode().partition(SENDER)
                    if sender == self.process_id:
                        continue  # our own request: the caller reloads this process itself
                    logger.info("reload requested: %s", reason)
                    await self.reload(retry_rejected=True)
            except RedisError as exc:
                logger.warning("reload channel lost (%s); resubscribing", exc)
                await asyncio.sleep(1.0)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _watch(self) -> None:
        previous: dict[str, str] | None = None
        while True:
            await asyncio.sleep(self.settings.watch_interval_s)
            with install_lock(shared=True, wait=False) as free:
                if not free:
                    previous = None  # an install is running: look again once it is done
                    continue
                # A scan reads every distribution's metadata: not on the event loop.
                found = {d.key: d for d in await asyncio.to_thread(discover)}
            installed = {key: d.fingerprint for key, d in found.items()}
            if installed == previous and any(self.catalog.pending(found)):
                logger.info("installed function packages changed; reloading")
                await self.reload()
            previous = installed


async def broadcast_reload(redis: Redis, reason: str, sender: str = "") -> None:
    await redis.publish(RELOAD_CHANNEL, f"{reason}{SENDER}{sender}")


async def read_reports(redis: Redis) -> list[ProcessReport]:
    """Reports of live processes; stale ones (a process that died) are dropped."""
    raw: dict[bytes, bytes] = await redis.hgetall(PROCESSES_KEY)  # type: ignore[misc]
    now_ms = time.time() * 1000
    live: list[tuple[bytes, ProcessReport]] = []
    stale: list[tuple[bytes, ProcessReport]] = []
    for key, value in raw.items():
        report = ProcessReport.parse(value)
        (live if now_ms - report.heartbeat_ms < REPORT_STALE_S * 1000 else stale).append(
            (key, report))
    if stale:
        await redis.hdel(PROCESSES_KEY, *(k.decode() for k, _ in stale))  # type: ignore[misc]
    return sorted((r for _, r in live), key=lambda r: (r.role, r.host, r.pid))


def converged(reports: list[ProcessReport], fingerprints: dict[str, str]) -> bool:
    """Every live worker runs exactly these plugin versions."""
    workers = [r for r in reports if r.role == "worker"]
    return all(r.fingerprints == fingerprints for r in workers)


def broadcast_on_sighup(redis_url: str, who: str) -> None:
    """Make SIGHUP to this process ask every host process to reload its functions."""

    def publish(signum: int, frame: FrameType | None) -> None:
        client = SyncRedis.from_url(redis_url, socket_timeout=2.0)
        try:
            client.publish(RELOAD_CHANNEL, f"SIGHUP to {who}")
        except RedisError as exc:
            logger.warning("SIGHUP: could not broadcast the reload: %s", exc)
        finally:
            client.close()

    signal.signal(signal.SIGHUP, publish)


async def wait_for_convergence(redis: Redis, catalog: Catalog, since_ms: int,
                               timeout_s: float) -> tuple[bool, list[ProcessReport]]:
    """Until every live worker has reported since `since_ms` and runs our versions."""
    deadline = time.monotonic() + timeout_s
    while True:
        reports = await read_reports(redis)
        workers = [r for r in reports if r.role == "worker"]
        fresh = all(r.heartbeat_ms >= since_ms for r in workers)
        if fresh and converged(reports, catalog.fingerprints()):
            return True, reports
        if time.monotonic() >= deadline:
            return False, reports
        await asyncio.sleep(0.1)
