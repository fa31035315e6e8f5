"""Listing jobs and dead letters newest first with cursors, and queue depths."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from taskmaster.engine.jobs import JobClient, JobStatus, JobView
from taskmaster.engine.keys import LEVELS, QueueKeys
from taskmaster.errors import InvalidArgumentError, StoreUnavailableError
from taskmaster.function import Priority

MAX_PAGE = 500
SCAN_LIMIT = 5000
"""Entries looked at per request; a sparse filter returns a shorter page and a cursor."""
BATCH = 200


@dataclass(frozen=True, kw_only=True)
class JobFilter:
    status: JobStatus | None = None
    queue: str | None = None
    function: str | None = None
    version: str | None = None
    priority: Priority | None = None
    error_contains: str | None = None

    def matches(self, job: JobView) -> bool:
        return all((
            self.status is None or job.status == self.status,
            self.function is None or job.function == self.function,
            self.version is None or job.version == self.version,
            self.priority is None or job.priority == self.priority,
            self.error_contains is None
            or self.error_contains.lower() in (job.error or "").lower(),
        ))


@dataclass(frozen=True)
class Page:
    jobs: list[tuple[str, JobView]]
    """(cursor, job) pairs, newest first."""
    has_next_page: bool
    end_cursor: str | None


@dataclass(frozen=True, order=True)
class _Position:
    """Order of the merged listing: higher score first, then key descending (keys are
    time-ordered, so jobs of one millisecond keep their submission order across queues),
    then queue."""

    neg_score: float
    neg_key: tuple[int, ...]
    queue: str

    @classmethod
    def of(cls, score: float, queue: str, key: str) -> _Position:
        return cls(-score, tuple(-b for b in key.encode()), queue)

    def encode(self, key: str) -> str:
        return base64.urlsafe_b64encode(f"{-self.neg_score!r}|{self.queue}|{key}".encode()
                                        ).decode()


def decode_cursor(cursor: str) -> tuple[float, str, str]:
    try:
        score, queue, key = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 2)
        return float(score), queue, key
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgumentError("after", "not a cursor this API returned") from None


async def list_jobs(client: JobClient, flt: JobFilter, first: int, after: str | None) -> Page:
    """All retained jobs, newest submission first."""
    return await _page(client, flt, first, after, lambda keys: keys.index)


async def dead_letters(client: JobClient, flt: JobFilter, first: int,
                       after: str | None) -> Page:
    """Dead-lettered jobs, most recently expiring (newest) first."""
    return await _page(client, flt, first, after, lambda keys: keys.dead)


async def _page(client: JobClient, flt: JobFilter, first: int, after: str | None,
                zset: Callable[[QueueKeys], str]) -> Page:
    if not 1 <= first <= MAX_PAGE:
        raise InvalidArgumentError("first", f"must be between 1 and {MAX_PAGE}, got {first}")
    start = _Position.of(*decode_cursor(after)) if after else None
    queues = [flt.queue] if flt.queue else await client.queue_names()
    heads = {q: _Scanner(client, q, zset(QueueKeys(q)), start) for q in queues}
    found: list[tuple[str, JobView]] = []
    scanned = 0
    last: tuple[_Position, str] | None = None
    try:
        while len(found) <= first and scanned < SCAN_LIMIT:
            candidates = [(await s.peek(), s) for s in heads.values()]
            live = [(p, s) for p, s in candidates if p is not None]
            if not live:
                break
            (position, key), scanner = min(live, key=lambda item: item[0][0])
            scanner.advance()
            scanned += 1
            last = (position, key)
            job = (await client.views(scanner.queue, [key]))[0]
            if job is not None and flt.matches(job):
                found.append((position.encode(key), job))
    except RedisError as exc:
        raise StoreUnavailableError(f"could not list jobs: {exc}") from None
    if len(found) > first:
        return Page(found[:first], True, found[first - 1][0])
    if scanned >= SCAN_LIMIT and last is not None:
        return Page(found, True, last[0].encode(last[1]))
    return Page(found, False, found[-1][0] if found else None)


class _Scanner:
    """Walks one queue's sorted set newest first, in batches, from a cursor on."""

    def __init__(self, client: JobClient, queue: str, key: str,
                 start: _Position | None) -> None:
        self.client, self.queue, self.key, self.start = client, queue, key, start
        self._buffer: list[tuple[_Position, str]] = []
        self._offset = 0
        self._exhausted = False

    async def peek(self) -> tuple[_Position, str] | None:
        while not self._buffer and not self._exhausted:
            await self._fill()
        return self._buffer[0] if self._buffer else None

    def advance(self) -> None:
        self._buffer.pop(0)

    async def _fill(self) -> None:
        top = -self.start.neg_score if self.start else "+inf"
        rows = await self.client.redis.zrevrangebyscore(
            self.key, top, "-inf", start=self._offset, num=BATCH, withscores=True)
        self._offset += len(rows)
        if len(rows) < BATCH:
            self._exhausted = True
        for raw, score in rows:
            key = raw.decode()
            position = _Position.of(score, self.queue, key)
            if self.start is None or position > self.start:
                self._buffer.append((position, key))


@dataclass(frozen=True, kw_only=True)
class QueueStats:
    name: str
    queued: dict[Priority, int]
    active: int
    scheduled: int
    dead_lettered: int
    retained_finished: int


async def queue_stats(client: JobClient) -> list[QueueStats]:
    names = await client.queue_names()
    try:
        async with client.redis.pipeline(transaction=False) as pipe:
            for name in names:
                keys = QueueKeys(name)
                for level in LEVELS:
                    pipe.llen(keys.queued(level))
                pipe.zcard(keys.active)
                pipe.zcard(keys.scheduled)
                pipe.zcard(keys.dead)
                pipe.zcard(keys.done)
            replies = await pipe.execute()
    except RedisError as exc:
        raise StoreUnavailableError(f"could not read queue depths: {exc}") from None
    stats = []
    width = len(LEVELS) + 4
    for i, name in enumerate(names):
        row = [int(v) for v in replies[i * width:(i + 1) * width]]
        stats.append(QueueStats(name=name, queued=dict(zip(LEVELS, row[:4], strict=True)),
                                active=row[4], scheduled=row[5], dead_lettered=row[6],
                                retained_finished=row[7]))
    return stats
