"""`taskmaster serve`: the store, N worker processes and the API, started and stopped as one.

Stop order on Ctrl-C/SIGTERM: the API stops accepting, workers finish their running jobs
(up to the shutdown grace), then the embedded store shuts down cleanly. Children get a
parent-death signal, so even a `kill -9` of this process leaves none of them behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn

from taskmaster.aio import run_fast
from taskmaster.api.app import check_listen_address, create_app
from taskmaster.errors import StoreUnavailableError
from taskmaster.registry.live import broadcast_on_sighup
from taskmaster.settings import Settings
from taskmaster.store.embedded import EmbeddedValkey, die_with_parent
from taskmaster.worker_process import check_worker_settings

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.2
RESPAWN_BACKOFF_MAX_S = 5.0
QUICK_DEATH_S = 2.0
"""A worker dying sooner than this after its start counts as a crash loop."""


@dataclass
class _Slot:
    process: subprocess.Popen[bytes]
    started: float
    backoff_s: float = 0.0
    respawn_at: float | None = None


class WorkerPool:
    """Worker processes kept at `count`: a dead one is replaced, with backoff if it loops."""

    def __init__(self, count: int, env: Mapping[str, str]) -> None:
        self.count = count
        self.env = dict(env)
        self.slots: list[_Slot] = []
        self.stopping = False

    def start(self) -> None:
        self.slots = [_Slot(self._spawn(), time.monotonic()) for _ in range(self.count)]

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "taskmaster", "worker"], env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us; we stop workers in order
            preexec_fn=die_with_parent(),
        )

    @property
    def pids(self) -> list[int]:
        return [slot.process.pid for slot in self.slots]

    def check(self) -> None:
        """Replace workers that died; call periodically."""
        now = time.monotonic()
        for slot in self.slots:
            if self.stopping or slot.process.poll() is None:
                continue
            if slot.respawn_at is None:
                quick = now - slot.started < QUICK_DEATH_S
                slot.backoff_s = min(max(slot.backoff_s * 2, 0.5), RESPAWN_BACKOFF_MAX_S) \
                    if quick else 0.0
                slot.respawn_at = now + slot.backoff_s
                logger.warning("worker %s exited with %s; restarting in %.1fs",
                               slot.process.pid, slot.process.returncode, slot.backoff_s)
            if now >= slot.respawn_at:
                slot.process = self._spawn()
                slot.started, slot.respawn_at = now, None

    def stop(self, grace_s: float) -> None:
        """SIGTERM every worker, wait for their running jobs, SIGKILL what is left."""
        self.stopping = True
        for slot in self.slots:
            if slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s + 5.0
        for slot in self.slots:
            try:
                slot.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker %s did not stop in time; killing it", slot.process.pid)
                slot.process.kill()
                slot.process.wait()


def child_env(settings: Settings, redis_url: str, config_file: Path | None) -> dict[str, str]:
    """What worker processes need to know, passed through their environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMASTER_")}
    env.update({
        "TASKMASTER_REDIS_URL": redis_url,
        "TASKMASTER_WORKER_CONCURRENCY": str(settings.worker.concurrency),
        "TASKMASTER_WORKER_QUEUES": ",".join(settings.worker.queues),
        "TASKMASTER_WORKER_SHUTDOWN_GRACE_S": str(settings.worker.shutdown_grace_s),
        "TASKMASTER_WORKER_LEASE_S": str(settings.worker.lease_s),
        "TASKMASTER_WORKER_MAX_STALLS": str(settings.worker.max_stalls),
        "TASKMASTER_WORKER_WEIGHTS": ",".join(settings.worker.weights),
        "TASKMASTER_JOBS_KEEP_COMPLETED_S": str(settings.jobs.keep_completed_s),
        "TASKMASTER_JOBS_KEEP_COMPLETED_COUNT": str(settings.jobs.keep_completed_count),
        "TASKMASTER_JOBS_KEEP_DEAD_S": str(settings.jobs.keep_dead_s),
        "TASKMASTER_RELOAD_DRAIN_TIMEOUT_S": str(settings.reload.drain_timeout_s),
        "TASKMASTER_RELOAD_WATCH": str(settings.reload.watch).lower(),
        "TASKMASTER_RELOAD_WATCH_INTERVAL_S": str(settings.reload.watch_interval_s),
    })
    if config_file is not None:
        env["TASKMASTER_CONFIG"] = str(config_file.resolve())
    return env


def serve(settings: Settings, *, config_file: Path | None = None) -> None:
    """Run everything until Ctrl-C/SIGTERM; raises if any part cannot start."""
    check_listen_address(settings)
    check_worker_settings(settings.worker)  # else every worker would crash-loop on them
    stop_requested: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)

    # uvicorn re-raises the signal that stopped it once it is done; with our handler in
    # place that is harmless and the cleanup below still runs.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, remember)

    store: EmbeddedValkey | None = None
    pool: WorkerPool | None = None
    try:
        redis_url = settings.redis_url
        if not redis_url:
            store = EmbeddedValkey(settings.data_dir,
                                   start_timeout_s=settings.store.start_timeout_s)
            redis_url = store.start()
        settings = settings.replace(redis_url=redis_url)
        broadcast_on_sighup(redis_url, "taskmaster serve")
        if stop_requested:
            return
        pool = WorkerPool(settings.worker.processes or os.cpu_count() or 1,
                          child_env(settings, redis_url, config_file))
        pool.start()
        logger.info("started %d worker process(es): %s", pool.count, pool.pids)
        run_fast(_serve_api(settings, pool, store, stop_requested))
    finally:
        if pool is not None:
            pool.stop(settings.worker.shutdown_grace_s)
        if store is not None:
            store.stop()
        logger.info("stopped")


async def _serve_api(settings: Settings, pool: WorkerPool, store: EmbeddedValkey | None,
                     stop_requested: list[int]) -> None:
    config = uvicorn.Config(create_app(settings), host=settings.api.host,
                            port=settings.api.port, access_log=False, log_config=None)
    server = uvicorn.Server(config)
    store_died: list[int] = []

    async def watch() -> None:
        while not server.should_exit:
            if stop_requested:  # a signal that came before uvicorn took over signals
                server.should_exit = True
            pool.check()
            if store is not None and store.process is not None and \
                    store.process.poll() is not None:
                store_died.append(store.process.returncode)
                server.should_exit = True
            await asyncio.sleep(WATCH_INTERVAL_S)

    watcher = asyncio.create_task(watch())
    try:
        await server.serve()
    finally:
        watcher.cancel()
    if store_died:
        raise StoreUnavailableError(f"the embedded Valkey exited with {store_died[0]};"
                                    f" see {settings.data_dir / 'valkey.log'}")
    if not server.started and not stop_requested:
        raise StoreUnavailableError(
            f"the API did not start on {settings.api.host}:{settings.api.port}; see the log")
