"""Connection factory and start-up checks for the Redis/Valkey store."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from taskmaster.errors import ConfigError, StoreUnavailableError

MIN_VERSION = (6, 2, 0)
POOL_HEADROOM = 16
"""Connections beyond the job slots: pub/sub, upkeep loops, API calls in the same process."""


def redact(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def create_redis(url: str, *, job_slots: int = 0, wait_timeout_s: float = 30.0) -> Redis:
    """A client whose pool waits for a free connection instead of failing.

    Sized for every job slot holding a connection at once plus headroom, and blocking
    (not raising "Too many connections") if that is ever exceeded.
    """
    try:
        pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
            url,
            max_connections=job_slots + POOL_HEADROOM,
            timeout=wait_timeout_s,
            health_check_interval=30,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL {redact(url)}: {exc}") from None
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


async def check_store(redis: Redis, url: str) -> dict[str, Any]:
    """Refuse a store that is unreachable, too old, or allowed to evict our keys."""
    try:
        info: dict[str, Any] = await redis.info()
    except (RedisError, OSError) as exc:
        raise StoreUnavailableError(f"cannot reach the store at {redact(url)}: {exc}") from None
    version = tuple(int(p) for p in str(info["redis_version"]).split(".")[:3])
    if version < MIN_VERSION:
        raise ConfigError(
            f"the store at {redact(url)} runs Redis {info['redis_version']};"
            " TaskMaster needs Redis >= 6.2 or Valkey"
        )
    policy = info.get("maxmemory_policy", "noeviction")
    if policy != "noeviction":
        raise ConfigError(
            f"the store at {redact(url)} has maxmemory-policy {policy}: it may evict queued"
            " jobs; set 'maxmemory-policy noeviction'"
        )
    return info
