"""Connection factory and store checks against real servers."""

from __future__ import annotations

import asyncio

import pytest

from taskmaster.errors import ConfigError, StoreUnavailableError
from taskmaster.store.connection import check_store, create_redis, redact
from taskmaster.store.embedded import free_port
from tests.fixtures.valkey import ExternalValkey


async def test_pool_waits_instead_of_raising_too_many_connections(valkey_url: str) -> None:
    client = create_redis(valkey_url, job_slots=2)
    try:
        # Far more concurrent blocking calls than connections in the pool.
        results = await asyncio.gather(*(client.blpop([f"nothing:{i}"], timeout=0.05)
                                         for i in range(100)))
        assert results == [None] * 100
        assert client.connection_pool.max_connections == 2 + 16
    finally:
        await client.aclose()


async def test_check_store_accepts_noeviction(valkey_url: str) -> None:
    client = create_redis(valkey_url)
    try:
        info = await check_store(client, valkey_url)
        assert info["maxmemory_policy"] == "noeviction"
    finally:
        await client.aclose()


async def test_check_store_refuses_an_evicting_store(external_valkey: ExternalValkey) -> None:
    url = external_valkey(maxmemory_policy="allkeys-lru")
    client = create_redis(url)
    try:
        with pytest.raises(ConfigError, match="maxmemory-policy allkeys-lru"):
            await check_store(client, url)
    finally:
        await client.aclose()


async def test_unreachable_store_is_a_clear_error() -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    client = create_redis(url)
    try:
        with pytest.raises(StoreUnavailableError, match="cannot reach the store") as caught:
            await check_store(client, url)
        assert "secret" not in caught.value.message
    finally:
        await client.aclose()


def test_redact_hides_the_password() -> None:
    assert redact("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("redis://user:pw@h:1") == "redis://user:***@h:1"
    assert redact("redis://h:1/0") == "redis://h:1/0"
