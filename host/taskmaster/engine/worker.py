"""TaskmasterWorker: SAQ's Worker running claimed jobs with the versions the registry loaded.

SAQ's Worker keeps its lifecycle (start/stop, concurrency tasks, upkeep loops, thread
pool, worker info); `process()` is ours: jobs come leased from the process's Dispatcher,
every write is fenced by the lease token, and the outcome follows our retry policy.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import socket
import traceback
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, cast

import msgspec
from saq.job import Job, Status
from saq.types import PartialTimersDict
from saq.utils import now
from saq.worker import Worker

from taskmaster.context import CancelFlag, Context
from taskmaster.engine.dispatch import Dispatcher
from taskmaster.engine.history import JobEvent, error_summary, traceback_tail
from taskmaster.engine.jobs import public_id
from taskmaster.engine.lease import LeaseKeeper
from taskmaster.engine.queue import Claimed, TaskmasterQueue, failure_events, run_ms
from taskmaster.engine.retry import retry_delay_s
from taskmaster.errors import InvalidPayloadError, NonRetryableError
from taskmaster.function import Function

logger = logging.getLogger(__name__)

CANCEL_CHECK_S = 0.2
SLOT_ERROR_PAUSE_S = 0.1
OUTCOME_BACKLOG = 2
"""Outcomes waiting to be written, per job slot, past which a slot waits for its own."""
WORKER_INFO_S = 10


class Runnable(Protocol):
    """What the worker needs to know about a job type (a registry CatalogEntry)."""

    @property
    def function(self) -> Function: ...
    @property
    def plugin(self) -> str: ...
    @property
    def version(self) -> str: ...


class FunctionSource(Protocol):
    """Where the worker finds the code for a job type (the registry's Catalog)."""

    def runnable(self, name: str) -> Runnable | None:
        """What runs this job type now; None if it must wait (reloading, or not loaded)."""

    def resources_of(self, plugin: str) -> dict[str, Any]: ...

    def active_functions(self) -> set[str]: ...


@dataclass
class _Attempt:
    claimed: Claimed
    task: asyncio.Task[Any] | None = None
    """The handler's own task: it runs in a copy of the slot's context, so what one job
    sets in a ContextVar does not carry over to the slot's next job."""
    cancel_requested: bool = False
    lease_lost: bool = False
    requeue_reason: str | None = None
    cancelled_flag: CancelFlag = field(default_factory=CancelFlag)
    timed_out: bool = False

    @property
    def job(self) -> Job:
        return self.claimed.job

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def interrupt(self) -> None:
        """Cancel the running handler; the caller says why first."""
        if self.task is not None and not self.task.done():
            self.cancelled_flag.set()
            self.task.cancel()


class TaskmasterWorker(Worker[Any]):
    """Runs the jobs of one queue; all queues of a process share a Dispatcher and leases."""

    # saq 0.26.4: Worker.start() installs loop signal handlers; one process serves
    # several queues, so the worker process owns signals and stops every worker itself.
    SIGNALS: list[signal.Signals] = []  # noqa: RUF012 - overrides SAQ's class attribute

    def __init__(self, queue: TaskmasterQueue, functions: FunctionSource,
                 *, dispatcher: Dispatcher, leases: LeaseKeeper, worker_id: str,
                 concurrency: int, shutdown_grace_s: float, lease_s: float,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(
            queue, functions=[], id=worker_id, concurrency=concurrency,
            shutdown_grace_period_s=shutdown_grace_s,  # type: ignore[arg-type]
            metadata=metadata,
            # saq 0.26.4 upkeep: "sweep" recovers expired leases and applies retention,
            # "abort" looks for cancel requests; "schedule" has nothing to do.
            # SAQ types timers as int; its loops take floats.
            timers=cast(PartialTimersDict, {
                "schedule": 3600, "worker_info": WORKER_INFO_S,
                "sweep": max(lease_s / 2, 0.1), "abort": CANCEL_CHECK_S}),
        )
        self.tm_queue = queue
        self.source = functions
        queue.runnable_functions = functions.active_functions
        self.dispatcher = dispatcher
        self.leases = leases
        self._attempts: dict[str, _Attempt] = {}
        self._loggers: dict[str, logging.Logger] = {}
        self._stop_requested = False
        dispatcher.add(queue)

    # -- lifecycle (saq 0.26.4) --
    async def start(self) -> None:
        # SAQ's start() replaces the stop event, so a stop() that came first is lost.
        if self._stop_requested:
            return
        await super().start()

    async def stop(self) -> None:
        self._stop_requested = True
        # SAQ waits for every task within the grace period, including upkeep loops that
        # sleep for long; stop those first so only running jobs use the grace.
        self.event.set()
        upkeep = [t for t in self.tasks if t.get_name() != "process"]
        for task in upkeep:
            task.cancel()
            self.tasks.discard(task)
        await asyncio.gather(*upkeep, return_exceptions=True)
        await super().stop()
        await self.tm_queue.journal.close()  # outcomes of the last jobs

    def running_jobs(self) -> list[str]:
        return [public_id(self.tm_queue.name, key) for key in self._attempts]

    def running_functions(self) -> set[str]:
        return {attempt.job.function for attempt in self._attempts.values()}

    def requeue_running(self, functions: set[str], reason: str) -> None:
        """Stop running attempts of these job types and put them back, unspent."""
        for attempt in self._attempts.values():
            if attempt.job.function in functions and attempt.running:
                attempt.requeue_reason = reason
                attempt.interrupt()

    def lease_lost(self, key: str) -> None:
        """The LeaseKeeper saw another worker take this job: stop our attempt quietly."""
        attempt = self._attempts.get(key)
        if attempt is not None and attempt.running:
            logger.warning("lost the lease of job %s; stopping this attempt", key,
                           extra={"job_id": key})
            attempt.lease_lost = True
            attempt.interrupt()

    async def abort(self, abort_threshold: float) -> None:  # saq 0.26.4 upkeep
        """Cancel running attempts whose job got a cancel request."""
        if not self._attempts:
            return
        keys = list(self._attempts)
        flags: list[bytes | None] = await self.tm_queue.redis.hmget(  # type: ignore[misc]
            self.tm_queue.keys.cancel, keys)
        for key, flag in zip(keys, flags, strict=True):
            attempt = self._attempts.get(key)
            if flag and attempt is not None and attempt.running:
                attempt.cancel_requested = True
                attempt.interrupt()

    # -- job slots --
    def _process(self, previous_task: asyncio.Task[Any] | None = None) -> None:
        """Start one job slot (saq 0.26.4 starts a task per job instead, chained by done
        callbacks). A slot ends when the dispatcher closes or the worker stops; SAQ's
        stop() waits for it, then cancels it."""
        slot = asyncio.create_task(self._slot(), name="process")
        self.tasks.add(slot)

    async def _slot(self) -> None:
        while not self.event.is_set():
            try:
                if not await self.process():
                    return
            except Exception:
                # A slot must outlive any one job: each lost slot would cost a unit of
                # concurrency for good, unseen.
                logger.exception("job slot of queue %s: unexpected error", self.tm_queue.name)
                await asyncio.sleep(SLOT_ERROR_PAUSE_S)

    async def process(self) -> bool:  # saq 0.26.4: one job
        claimed = await self.dispatcher.next(self.tm_queue.name)
        if claimed is None:
            return False
        job = claimed.job
        runnable = self.source.runnable(job.function)
        if runnable is None:
            await self._park(claimed)
            return True
        # Registered before the first await, so a reload's drain sees this execution.
        attempt = _Attempt(claimed)
        self._attempts[job.key] = attempt
        self.leases.hold(self.tm_queue.name, job.key, claimed.token)
        outcome: asyncio.Future[int] | None = None
        try:
            self._begin(claimed, runnable)
            started = JobEvent(type="started", attempt=job.attempts, worker=self.id,
                               plugin=runnable.plugin, version=runnable.version,
                               wait_ms=max(0, job.started - job.queued)
                               if job.attempts == 1 and job.queued else None)
            if claimed.suspect:
                # It may kill this process too: its start must be on record before it runs.
                if not await self.tm_queue.record(job, claimed.token, started):
                    return True
            else:
                self.tm_queue.start_attempt(job, claimed.token, started, claimed.clock.now_ms())
            outcome = await self._settle(attempt, runnable)
            if outcome is not None and \
                    self.tm_queue.journal.backlog() > OUTCOME_BACKLOG * self.concurrency:
                await asyncio.shield(outcome)  # the store falls behind: slow down with it
        except Exception:
            logger.exception("could not run job %s or record its outcome", job.key,
                             extra={"job_id": job.key})
        finally:
            self._attempts.pop(job.key, None)
            self.dispatcher.finished(claimed)
            if outcome is None or outcome.done():
                self.leases.release(self.tm_queue.name, job.key)
            else:
                # The slot is free once the handler is done; the lease is kept until the
                # outcome is on record.
                outcome.add_done_callback(partial(self._recorded, job.key))
        return True

    def _recorded(self, key: str, outcome: asyncio.Future[int]) -> None:
        self.leases.release(self.tm_queue.name, key)
        if outcome.cancelled():
            return
        if outcome.exception() is not None:
            logger.error("could not record the outcome of job %s: %s", key, outcome.exception(),
                         extra={"job_id": key})
        elif not outcome.result():
            logger.warning("discarded the outcome of job %s: its lease went to another worker",
                           key, extra={"job_id": key})

    async def _park(self, claimed: Claimed) -> None:
        job = claimed.job
        first = not job.meta.get("waiting")
        job.meta["waiting"] = True
        reason = (f"{job.function} cannot run on worker {self.id} now (being reloaded, or not"
                  " installed); the job waits until it can") if first else None
        try:
            await self.tm_queue.park(job, claimed.token, reason)
        finally:
            self.dispatcher.finished(claimed)

    def _begin(self, claimed: Claimed, runnable: Runnable) -> None:
        job = claimed.job
        job.meta.pop("waiting", None)
        job.status = Status.ACTIVE
        job.attempts = claimed.attempt
        job.started = now()
        job.touched = job.started
        job.completed = 0
        job.worker_id = self.id
        job.error = None
        job.meta["priority"] = claimed.level.value
        job.meta["plugin"] = runnable.plugin
        job.meta["version"] = runnable.version

    async def _settle(self, attempt: _Attempt, runnable: Runnable
                      ) -> asyncio.Future[int] | None:
        """Run the attempt and queue its outcome; returns the outcome's pending write."""
        job, token = attempt.job, attempt.claimed.token
        queue = self.tm_queue
        try:
            result = await self._execute(attempt, runnable)
        except asyncio.CancelledError:
            if attempt.lease_lost:
                return None
            if attempt.cancel_requested:
                job.status, job.error, job.completed = Status.ABORTED, "cancelled", now()
                return queue.finish_attempt(job, token,
                                            JobEvent(type="cancelled", attempt=job.attempts))
            slot = asyncio.current_task()
            stopping = self.event.is_set() or (slot is not None and slot.cancelling() > 0)
            if attempt.requeue_reason is None and not stopping:
                # Nobody cancelled it: the handler raised CancelledError itself (say, from
                # a future something else cancelled). That is the handler's failure.
                return self._failed(attempt, RuntimeError(
                    "the handler raised CancelledError without being cancelled"))
            # A reload's drain ran out, or the worker is shutting down: give the attempt
            # back without spending it.
            job.attempts -= 1
            job.status = Status.QUEUED
            requeued = queue.retry_attempt(job, token, attempt.claimed.level, 0, JobEvent(
                type="requeued", attempt=job.attempts + 1, message=attempt.requeue_reason
                or "the worker shut down before the attempt finished"), spent=False)
            if attempt.requeue_reason is None:
                await asyncio.shield(requeued)
                raise
            return requeued
        except Exception as exc:
            return self._failed(attempt, exc)
        job.status, job.result, job.progress, job.completed = (
            Status.COMPLETE, result, 1.0, now())
        return queue.finish_attempt(job, token, JobEvent(
            type="completed", attempt=job.attempts, worker=self.id, plugin=runnable.plugin,
            version=runnable.version, run_ms=run_ms(job)))

    async def _execute(self, attempt: _Attempt, runnable: Runnable) -> Any:
        job = attempt.job
        function = runnable.function
        data = function.parse_input((job.kwargs or {}).get("payload"))
        pending: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()
        context = Context(
            job_id=public_id(self.tm_queue.name, job.key), function=job.function,
            attempt=job.attempts, max_attempts=job.retries, plugin=runnable.plugin,
            version=runnable.version, logger=self._logger(job.function),
            resources=self.source.resources_of(runnable.plugin),
            _report=partial(self._report, attempt, pending, loop),
            _cancelled=attempt.cancelled_flag,
        )
        if function.is_async:
            task = loop.create_task(function.handler(context, data))  # type: ignore[arg-type]
        else:
            run = contextvars.copy_context().run
            task = asyncio.ensure_future(loop.run_in_executor(
                self.pool, run, function.handler, context, data))
        attempt.task = task
        timer = loop.call_later(job.timeout, self._time_out, attempt) if job.timeout else None
        try:
            # A stop of the worker cancels this await, and with it the handler's task.
            result = await task
        except asyncio.CancelledError:
            attempt.cancelled_flag.set()
            if attempt.timed_out:
                raise TimeoutError(f"attempt exceeded timeoutSeconds={job.timeout}") from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
            # A progress write landing after the outcome would overwrite the final record.
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        return result if result is None else msgspec.to_builtins(result)

    @staticmethod
    def _time_out(attempt: _Attempt) -> None:
        if attempt.running:
            attempt.timed_out = True
            attempt.interrupt()

    def _logger(self, function: str) -> logging.Logger:
        found = self._loggers.get(function)
        if found is None:
            found = self._loggers[function] = logging.getLogger(f"taskmaster.fn.{function}")
        return found

    def _failed(self, attempt: _Attempt, exc: Exception) -> asyncio.Future[int]:
        job, token, queue = attempt.job, attempt.claimed.token, self.tm_queue
        error = "".join(traceback.format_exception(exc))
        final = isinstance(exc, NonRetryableError | InvalidPayloadError)
        failed_attempts = job.attempts - attempt.claimed.stalls
        if not final and failed_attempts < job.retries:
            delay_s = retry_delay_s(job, failed_attempts)
            job.status, job.error = Status.QUEUED, error
            return queue.retry_attempt(job, token, attempt.claimed.level, int(delay_s * 1000),
                                       JobEvent(type="retry_scheduled", attempt=job.attempts,
                                                worker=self.id, plugin=job.meta.get("plugin"),
                                                version=job.meta.get("version"),
                                                error=error_summary(error),
                                                traceback=traceback_tail(error),
                                                delay_s=delay_s, run_ms=run_ms(job)))
        job.status, job.error, job.completed = Status.FAILED, error, now()
        return queue.finish_attempt(job, token, *failure_events(job, error, dead=True))

    def _report(self, attempt: _Attempt, pending: list[asyncio.Future[None]],
                loop: asyncio.AbstractEventLoop, fraction: float | None,
                message: str | None) -> None:
        """Context.progress/heartbeat: from the loop, or from a sync handler's thread."""
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            pending.append(loop.create_task(self._write_progress(attempt, fraction, message)))
        else:
            future: Future[None] = asyncio.run_coroutine_threadsafe(
                self._write_progress(attempt, fraction, message), loop)
            pending.append(asyncio.wrap_future(future, loop=loop))

    async def _write_progress(self, attempt: _Attempt, fraction: float | None,
                              message: str | None) -> None:
        job = attempt.job
        if fraction is not None:
            job.progress = fraction
        job.touched = now()
        progress_event = None
        if message is not None:
            job.meta["progress_message"] = message
            progress_event = JobEvent(type="progress", attempt=job.attempts,
                                      progress=job.progress, message=message)
        await self.tm_queue.record(job, attempt.claimed.token, progress_event)


def worker_metadata(versions: dict[str, str]) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "versions": versions}

