"""Reading the job metrics the scripts keep: per-minute series and running totals."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

from redis.asyncio import Redis

from taskmaster.engine.keys import QueueKeys

COUNTERS = ("submitted", "started", "completed", "failed", "retry_scheduled",
            "dead_lettered", "cancelled")
DURATIONS = ("wait", "run")
BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
MAX_WINDOW_MIN = 120


@dataclass
class Tally:
    """Counts and duration histograms (non-cumulative buckets) of some jobs."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    buckets: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    sums_ms: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, name: str, value: int) -> None:
        kind, _, rest = name.partition(":")
        if not rest:
            self.counts[kind] += value
        elif rest.startswith("le:"):
            self.buckets[kind][rest[3:]] += value
        elif rest == "sum_ms":
            self.sums_ms[kind] += value

    def merge(self, other: Tally) -> None:
        for name, value in other.counts.items():
            self.counts[name] += value
        for kind, buckets in other.buckets.items():
            for le, value in buckets.items():
                self.buckets[kind][le] += value
        for kind, value in other.sums_ms.items():
            self.sums_ms[kind] += value

    def cumulative(self, kind: str) -> list[tuple[str, int]]:
        """(le, count ≤ le) for every bound and +Inf, as Prometheus wants them."""
        running, out = 0, []
        for bound in (*map(str, BOUNDS_MS), "+Inf"):
            running += self.buckets[kind].get(bound, 0)
            out.append((bound, running))
        return out

    def percentile(self, kind: str, q: float) -> float | None:
        """The bucket bound under which a fraction q of durations fall (upper estimate)."""
        rows = self.cumulative(kind)
        total = rows[-1][1]
        if total == 0:
            return None
        for bound, count in rows:
            if count >= math.ceil(q * total):
                return float(bound) if bound != "+Inf" else float(BOUNDS_MS[-1])
        return None


Key = tuple[str, str, str]
"""(queue, function, version)"""


def _parse(queue: str, raw: dict[bytes, bytes], into: dict[Key, Tally]) -> None:
    for field_name, value in raw.items():
        function, version, name = field_name.decode().split("|", 2)
        into.setdefault((queue, function, version), Tally()).add(name, int(value))


async def totals(redis: Redis, queues: list[str]) -> dict[Key, Tally]:
    found: dict[Key, Tally] = {}
    async with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.hgetall(QueueKeys(queue).totals)
        replies = await pipe.execute()
    for queue, raw in zip(queues, replies, strict=True):
        _parse(queue, raw, found)
    return found


async def series(redis: Redis, queues: list[str], minutes: int, *,
                 function: str | None = None) -> list[tuple[int, Tally]]:
    """One Tally per minute for the last `minutes` minutes (oldest first)."""
    minutes = max(1, min(minutes, MAX_WINDOW_MIN))
    now_minute = int(time.time() // 60)
    span = list(range(now_minute - minutes + 1, now_minute + 1))
    async with redis.pipeline(transaction=False) as pipe:
        for minute in span:
            for queue in queues:
                pipe.hgetall(QueueKeys(queue).metrics(minute))
        replies = iter(await pipe.execute())
    points = []
    for minute in span:
        tally = Tally()
        for queue in queues:
            per_key: dict[Key, Tally] = {}
            _parse(queue, next(replies), per_key)
            for (_, fn, _), part in per_key.items():
                if function is None or fn == function:
                    tally.merge(part)
        points.append((minute * 60, tally))
    return points
