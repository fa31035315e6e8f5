"""TaskmasterWorker: SAQ's Worker running the functions the registry resolves."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import socket
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

import msgspec
from saq.job import Job
from saq.worker import Worker

from taskmaster.context import Context
from taskmaster.engine.jobs import public_id
from taskmaster.engine.queue import TaskmasterQueue
from taskmaster.errors import InvalidPayloadError, NonRetryableError, UnknownFunctionError
from taskmaster.function import Function

logger = logging.getLogger(__name__)

DEQUEUE_TIMEOUT_S = 1.0
"""How long an idle slot blocks in BLMOVE; bounds how long a graceful stop waits for it."""


class Runnable(Protocol):
    """What the worker needs to know about a job type (a registry CatalogEntry)."""

    @property
    def function(self) -> Function: ...
    @property
    def plugin(self) -> str: ...
    @property
    def version(self) -> str: ...


Resolver = Callable[[str], Runnable]
"""Job type → what runs it; raises UnknownFunctionError when nothing is loaded for it."""
ResourcesOf = Callable[[str], dict[str, Any]]


class _Handlers(dict[str, Any]):
    """SAQ looks handlers up by job type; every type resolves to the one adapter."""

    def __init__(self, adapter: Callable[..., Any]) -> None:
        super().__init__()
        self._adapter = adapter

    def __missing__(self, name: str) -> Callable[..., Any]:
        return self._adapter


class TaskmasterWorker(Worker[Any]):
    """Runs the jobs of one queue with the versions the registry has loaded."""

    # saq 0.26.4: Worker.start() installs loop signal handlers; one process serves
    # several queues, so the worker process owns signals and stops every worker itself.
    SIGNALS: list[signal.Signals] = []  # noqa: RUF012 - overrides SAQ's class attribute

    def __init__(self, queue: TaskmasterQueue, resolve: Resolver, resources_of: ResourcesOf,
                 *, worker_id: str, concurrency: int, shutdown_grace_s: float,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(
            queue, functions=[], id=worker_id, concurrency=concurrency,
            dequeue_timeout=DEQUEUE_TIMEOUT_S,
            shutdown_grace_period_s=shutdown_grace_s,  # type: ignore[arg-type]
            metadata=metadata,
        )
        self.functions = _Handlers(self._run)
        self.resolve = resolve
        self.resources_of = resources_of
        self.queue_name = queue.name
        self._running: dict[str, Runnable | None] = {}
        self._stop_requested = False
        queue.on_attempt = self._record_attempt

    def _record_attempt(self, job: Job) -> None:
        """Stamp the plugin and version about to run this attempt onto the job."""
        try:
            runnable: Runnable | None = self.resolve(job.function)
        except UnknownFunctionError:
            runnable = None
        self._running[job.key] = runnable
        plugin = runnable.plugin if runnable else None
        version = runnable.version if runnable else None
        job.meta["plugin"] = plugin
        job.meta["version"] = version
        job.meta.setdefault("attempts_log", []).append(
            {"attempt": job.attempts, "plugin": plugin, "version": version, "worker": self.id})

    async def _run(self, ctx: dict[str, Any], *, payload: Any) -> Any:
        job: Job = ctx["job"]
        runnable = self._running.pop(job.key, None)
        pending: list[asyncio.Future[None]] = []
        try:
            if runnable is None:
                raise UnknownFunctionError(job.function, [])
            function = runnable.function
            data = function.parse_input(payload)
            context = Context(
                job_id=public_id(self.queue_name, job.key), function=job.function,
                attempt=job.attempts, max_attempts=job.retries, plugin=runnable.plugin,
                version=runnable.version, logger=logging.getLogger(f"taskmaster.fn.{job.function}"),
                resources=self.resources_of(runnable.plugin),
                _report=self._reporter(job, pending),
            )
            if function.is_async:
                result = await function.handler(context, data)
            else:
                call = contextvars.copy_context().run
                result = await asyncio.get_running_loop().run_in_executor(
                    self.pool, call, function.handler, context, data)
            return msgspec.to_builtins(result)
        except (NonRetryableError, UnknownFunctionError, InvalidPayloadError):
            job.meta["non_retryable"] = True
            raise
        finally:
            # A progress write landing after the finish would overwrite the final record.
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    def _reporter(self, job: Job, pending: list[asyncio.Future[None]]
                  ) -> Callable[[float | None, str | None], None]:
        loop = asyncio.get_running_loop()

        def report(fraction: float | None, message: str | None) -> None:
            changes: dict[str, Any] = {}
            if fraction is not None:
                changes["progress"] = fraction
            if message is not None:
                changes["meta"] = {**job.meta, "progress_message": message}
            try:
                in_loop = asyncio.get_running_loop() is loop
            except RuntimeError:
                in_loop = False
            if in_loop:
                pending.append(loop.create_task(job.update(**changes)))
            else:
                future: Future[None] = asyncio.run_coroutine_threadsafe(
                    job.update(**changes), loop)
                pending.append(asyncio.wrap_future(future, loop=loop))

        return report

    async def start(self) -> None:  # saq 0.26.4
        # SAQ's start() replaces the stop event, so a stop() that came first is lost.
        if self._stop_requested:
            return
        await super().start()

    async def stop(self) -> None:  # saq 0.26.4
        self._stop_requested = True
        # SAQ waits for every task within the grace period, including upkeep loops that
        # sleep up to a minute; stop those first so only running jobs use the grace.
        self.event.set()
        upkeep = [t for t in self.tasks if t.get_name() != "process"]
        for task in upkeep:
            task.cancel()
            self.tasks.discard(task)
        await asyncio.gather(*upkeep, return_exceptions=True)
        await super().stop()


def worker_metadata(versions: dict[str, str]) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "versions": versions}

