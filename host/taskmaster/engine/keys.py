"""Key layout of one queue; every key carries the queue name as a Cluster hash tag."""

from __future__ import annotations

from dataclasses import dataclass

from taskmaster.function import Priority

PREFIX = "taskmaster"
LEVELS = (Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW)
QUEUES_KEY = f"{PREFIX}:queues"
"""A set of every queue name ever used (the one key outside any queue's slot)."""


@dataclass(frozen=True)
class QueueKeys:
    queue: str

    def key(self, suffix: str) -> str:
        return f"{PREFIX}:{{{self.queue}}}:{suffix}"

    def job(self, job_key: str) -> str:
        return self.key(f"job:{job_key}")

    def history(self, job_key: str) -> str:
        return self.key(f"history:{job_key}")

    def queued(self, level: Priority) -> str:
        return self.key(f"queued:{level.value}")

    @property
    def all_queued(self) -> list[str]:
        return [self.queued(level) for level in LEVELS]

    def parked(self, function: str) -> str:
        """LIST of jobs claimed while their function could not run here (reloading, gone)."""
        return self.key(f"parked:{function}")

    @property
    def parked_functions(self) -> str:
        """SET of job types with parked jobs."""
        return self.key("parked-functions")

    @property
    def suspects(self) -> str:
        """LIST of jobs recovered from a dead worker; each runs alone in its process next."""
        return self.key("suspects")

    @property
    def scheduled(self) -> str:
        """ZSET job id → due time (server ms): delayed jobs and retries waiting."""
        return self.key("scheduled")

    @property
    def active(self) -> str:
        """ZSET job id → lease deadline (server ms)."""
        return self.key("active")

    @property
    def lease(self) -> str:
        """HASH job id → lease token of the attempt that holds it."""
        return self.key("lease")

    @property
    def priority(self) -> str:
        """HASH job id → priority level, while the job is not finished."""
        return self.key("priority")

    @property
    def stalls(self) -> str:
        """HASH job id → how often its worker died under it."""
        return self.key("stalls")

    @property
    def attempts(self) -> str:
        """HASH job id → attempts started so far, while the job is not finished. Attempt
        numbers are issued by the claim, so an attempt whose worker died before its start
        was written still counts."""
        return self.key("attempts")

    @property
    def cancel(self) -> str:
        """HASH job id → 1 when a cancel of the running attempt was requested."""
        return self.key("cancel")

    @property
    def done(self) -> str:
        """ZSET completed/cancelled job id → removal time (server ms)."""
        return self.key("done")

    @property
    def dead(self) -> str:
        """ZSET dead-lettered job id → removal time (server ms)."""
        return self.key("dead")

    @property
    def index(self) -> str:
        """ZSET every retained job id → submission time (server ms), for listing."""
        return self.key("index")

    @property
    def idempotency(self) -> str:
        """HASH idempotency key → job id."""
        return self.key("idem")

    @property
    def idempotency_of(self) -> str:
        """HASH job id → its idempotency key (to remove both together)."""
        return self.key("idem-of")

    @property
    def swrr(self) -> str:
        """HASH level → smooth weighted round-robin credit."""
        return self.key("swrr")

    @property
    def events(self) -> str:
        """STREAM of every history event of the queue's jobs (capped)."""
        return self.key("events")

    def metrics(self, minute: int) -> str:
        """HASH of counts for one minute: `function|version|counter` → n (kept 2 hours)."""
        return self.key(f"metrics:{minute}")

    @property
    def totals(self) -> str:
        """HASH of the same counts since the queue began (Prometheus counters)."""
        return self.key("totals")

    @property
    def wake(self) -> str:
        """LIST of tokens that wake fetch loops blocked on an empty queue."""
        return self.key("wake")
