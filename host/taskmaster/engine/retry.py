"""Retry policy: how long a failed attempt waits before the next one."""

from __future__ import annotations

import random

from saq.job import Job


def retry_delay_s(job: Job, failed_attempts: int) -> float:
    """base * 2**(n-1) for the n-th retry, capped at the maximum; jitter only if asked.

    Jitter keeps the exponential growth (a delay in [d/2, d]) while spreading retries
    of many jobs that failed together.
    """
    base = float(job.retry_delay)
    if base <= 0:
        return 0.0
    cap = float(job.retry_backoff) if not isinstance(job.retry_backoff, bool) else float("inf")
    delay: float = min(cap, base * 2 ** max(failed_attempts - 1, 0))
    if job.meta.get("retry_jitter"):
        delay *= random.uniform(0.5, 1.0)  # noqa: S311 - spreading load, not security
    return delay
