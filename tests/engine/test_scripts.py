"""The scripts' shared helpers, run on a real Valkey."""

from __future__ import annotations

from bisect import bisect_left

from redis.asyncio import Redis

from taskmaster.engine.metrics import BOUNDS_MS
from taskmaster.engine.scripts import _PRELUDE


async def test_a_duration_lands_in_the_bucket_of_the_first_bound_it_does_not_exceed(
        redis: Redis) -> None:
    durations = sorted({0, 1, 10**6, *BOUNDS_MS, *(b - 1 for b in BOUNDS_MS),
                        *(b + 1 for b in BOUNDS_MS)})
    bounds, buckets = await redis.eval(  # type: ignore[misc]
        _PRELUDE + """
        local out = {}
        for i, ms in ipairs(ARGV) do out[i] = bucket_of(tonumber(ms)) end
        return {DURATION_BUCKETS, out}""", 0, *durations)
    assert tuple(bounds) == BOUNDS_MS  # what the metrics readers expect
    assert buckets == [bisect_left(BOUNDS_MS, ms) + 1 for ms in durations]
