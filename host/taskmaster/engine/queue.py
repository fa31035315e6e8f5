"""TaskmasterQueue: SAQ's RedisQueue with hash-tagged keys and a history per job.

Every key of a queue carries the queue name as a Redis Cluster hash tag
(`taskmaster:{email}:...`), so a queue's multi-key scripts stay on one shard. Each
override notes the SAQ version it was checked against; SAQ is pinned to that minor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from saq.job import Job, Status
from saq.queue.redis import PubSubMultiplexer, RedisQueue
from saq.utils import now

from taskmaster.engine.history import error_summary, event, traceback_tail
from taskmaster.function import check_queue_name

logger = logging.getLogger(__name__)

KEY_PREFIX = "taskmaster"
ABANDONED = "abandoned: no live worker held this job"
SWEEP_CONFIRM_S = 2.0
"""How long a job must keep looking abandoned before the sweep recovers it."""

_FINISH_EVENTS = {Status.COMPLETE: "completed", Status.FAILED: "failed",
                  Status.ABORTED: "cancelled"}

# KEYS: incomplete zset, job key, queued list, history list
# ARGV: job record, scheduled (epoch s, 0 = now), submitted event
_ENQUEUE = """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('ZSCORE', KEYS[1], KEYS[2]) then
    return nil
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], KEYS[2])
if ARGV[2] == '0' then redis.call('RPUSH', KEYS[3], KEYS[2]) end
redis.call('RPUSH', KEYS[4], ARGV[3])
return 1
"""

AttemptHook = Callable[[Job], None]


def _dump(data: Mapping[Any, Any]) -> bytes:
    return msgspec.json.encode(data)


def _load(data: bytes | str) -> Any:
    return msgspec.json.decode(data)


class TaskmasterQueue(RedisQueue):
    """One named queue in Redis/Valkey."""

    def __init__(self, redis: Redis, name: str = "default", *,
                 on_attempt: AttemptHook | None = None) -> None:
        check_queue_name(name)
        super().__init__(redis, name=name, dump=_dump, load=_load,
                         swept_error_message=ABANDONED)
        self._pubsub = PubSubMultiplexer(redis.pubsub(), prefix=self.job_id(""))
        self._enqueue_tm: AsyncScript = redis.register_script(_ENQUEUE)
        self.on_attempt = on_attempt
        """Called with the job as an attempt starts, before it is recorded (workers)."""

    # -- key layout (saq 0.26.4: namespace, job_id, job_key_from_id) --
    def namespace(self, key: str) -> str:
        return f"{KEY_PREFIX}:{{{self.name}}}:{key}"

    def job_id(self, job_key: str) -> str:
        return f"{KEY_PREFIX}:{{{self.name}}}:job:{job_key}"

    def job_key_from_id(self, job_id: str) -> str:
        return job_id[len(self.job_id("")):]

    def history_key(self, job_key: str) -> str:
        return self.namespace(f"history:{job_key}")

    # -- transitions --
    async def _enqueue(self, job: Job) -> Job | None:  # saq 0.26.4
        submitted = event("submitted", message=f"priority {job.meta.get('priority')}")
        async with self._op_sem:
            created = await self._enqueue_tm(
                keys=[self._incomplete, job.id, self._queued, self.history_key(job.key)],
                args=[self.serialize(job), job.scheduled, submitted],
                client=self.redis,
            )
        return job if created else None

    async def update(self, job: Job, **kwargs: Any) -> None:  # saq 0.26.4
        if kwargs.get("status") == Status.ACTIVE and self.on_attempt is not None:
            self.on_attempt(job)
        await super().update(job, **kwargs)

    async def _update(self, job: Job, status: Status | None = None,
                      **kwargs: Any) -> None:  # saq 0.26.4
        if status is None:
            # A progress report or heartbeat: keep the stored status (a cancel may have
            # changed it meanwhile), as SAQ does.
            stored = await self.job(job.key)
            job.status = stored.status if stored else job.status
        else:
            job.status = status
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(job.id, self.serialize(job))
            if status == Status.ACTIVE:
                pipe.rpush(self.history_key(job.key), event(
                    "started", attempt=job.attempts, worker=job.worker_id,
                    plugin=job.meta.get("plugin"), version=job.meta.get("version")))
            elif kwargs.get("meta", {}).get("progress_message") is not None:
                pipe.rpush(self.history_key(job.key), event(
                    "progress", attempt=job.attempts, progress=job.progress,
                    message=job.meta["progress_message"]))
            pipe.publish(job.id, job.status)
            await pipe.execute()

    async def retry(self, job: Job, error: str | None) -> None:  # saq 0.26.4
        # The worker marks attempts that must not be repeated (NonRetryableError,
        # a payload the loaded version rejects); SAQ only knows attempts < retries.
        if job.meta.get("non_retryable"):
            await self.finish(job, Status.FAILED, error=error)
            return
        await super().retry(job, error)

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:  # saq 0.26.4
        """Recover jobs in `active` that no live attempt owns; two-phase, unlike SAQ.

        SAQ treats any job in `active` whose record is not ACTIVE as stuck, but a live
        worker moves a job to `active` one round trip before it marks it ACTIVE, so a
        sweep in between runs the job twice (SAQ #124/#277). A suspect is recovered
        only if it still looks abandoned SWEEP_CONFIRM_S later.
        """
        suspects = await self._sweep_suspects(lock)
        if not suspects:
            return []
        await asyncio.sleep(SWEEP_CONFIRM_S)
        confirmed = set(suspects) & set(await self._sweep_suspects(lock=0))
        for job_id in confirmed:
            job = await self._get_job_by_id(job_id)
            if job is None:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                continue
            logger.warning("recovering abandoned job %s", job_id, extra={"job_id": job_id})
            await self.abort(job, error=self.swept_error_message)
            with contextlib.suppress(asyncio.TimeoutError):
                await job.refresh(abort)
            if job.retryable:
                await self.retry(job, error=self.swept_error_message)
            else:
                await self.finish(job, Status.ABORTED, error=self.swept_error_message)
        return sorted(confirmed)

    async def _sweep_suspects(self, lock: int) -> list[str]:
        # The sweep lock: one sweep per queue per `lock` seconds across all workers.
        if lock and not await self.redis.set(self._sweep, 1, ex=lock, nx=True):
            return []
        active: list[bytes] = await self.redis.lrange(self._active, 0, -1)  # type: ignore[misc]
        ids = [i.decode() for i in active]
        records = await self.redis.mget(ids) if ids else []
        suspects = []
        for job_id, raw in zip(ids, records, strict=True):
            job = self.deserialize(raw)
            if job is None or job.status != Status.ACTIVE or job.stuck:
                suspects.append(job_id)
        return suspects

    async def _retry(self, job: Job, error: str | None) -> None:  # saq 0.26.4
        delay_s = retry_delay_s(job)
        job.meta["retry_at_ms"] = now() + int(delay_s * 1000) if delay_s else None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(self._active, 1, job.id)
            pipe.lrem(self._queued, 1, job.id)
            if delay_s:
                pipe.zadd(self._incomplete, {job.id: now() / 1000 + delay_s})
            else:
                pipe.zadd(self._incomplete, {job.id: job.scheduled})
                pipe.rpush(self._queued, job.id)
            pipe.set(job.id, self.serialize(job))
            pipe.rpush(self.history_key(job.key), event(
                "retry_scheduled", attempt=job.attempts, worker=job.worker_id,
                error=error_summary(error),
                traceback=traceback_tail(error), delay_s=delay_s))
            pipe.publish(job.id, job.status)
            await pipe.execute()

    async def _finish(self, job: Job, status: Status, *, result: Any = None,
                      error: str | None = None) -> None:  # saq 0.26.4
        history = self.history_key(job.key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(self._active, 1, job.id)
            pipe.zrem(self._incomplete, job.id)
            pipe.rpush(history, event(
                _FINISH_EVENTS.get(status, status.value), attempt=job.attempts,
                worker=job.worker_id, error=error_summary(error),
                traceback=traceback_tail(error)))
            if job.ttl > 0:
                pipe.setex(job.id, job.ttl, self.serialize(job))
                pipe.expire(history, job.ttl)
            elif job.ttl == 0:
                pipe.set(job.id, self.serialize(job))
            else:
                pipe.delete(job.id, history)
            pipe.publish(job.id, job.status)
            await pipe.execute()


def retry_delay_s(job: Job) -> float:
    """base * 2**(n-1) for the n-th retry, capped; no jitter."""
    base: float = float(job.retry_delay)
    if base <= 0:
        return 0.0
    cap = float(job.retry_backoff) if not isinstance(job.retry_backoff, bool) else float("inf")
    return float(min(cap, base * 2 ** max(job.attempts - 1, 0)))
