"""The Python client library, sync and async, against the real server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from redis.asyncio import Redis

from taskmaster.client import AsyncClient, Client, Job
from taskmaster.errors import RemoteError, ServerUnavailableError
from taskmaster.store.embedded import free_port
from tests.fixtures.server import Server, base_env
from tests.fixtures.waiting import wait_until


def test_sync_client_submits_waits_and_lists(server: Server, server_redis: Redis) -> None:
    seen: list[str] = []
    with Client(server.graphql_url, token="not-checked-yet") as tm:
        job = tm.submit("demo.sleep", {"seconds": 0.3}, priority="HIGH", max_attempts=2)
        assert isinstance(job, Job) and job.priority == "HIGH" and job.max_attempts == 2
        done = tm.wait(job.id, timeout=15, on_update=lambda j: seen.append(j.status))
        assert done.done and done.status == "COMPLETE" and done.result == {"slept": 0.3}
        assert done.version == "1.0.0" and done.started_at and done.completed_at
        assert [e.type for e in done.history][-1] == "completed"
        assert seen[-1] == "COMPLETE" and len(seen) >= 2
        assert tm.get(job.id) == done
        page = tm.jobs(first=10, function="demo.sleep")
        assert [j.id for j in page.jobs] == [job.id] and not page.has_next_page
        with pytest.raises(RemoteError) as caught:
            tm.submit("demo.ecko", {})
        assert caught.value.code == "UNKNOWN_FUNCTION"
        with pytest.raises(TypeError, match="unknown submit option"):
            tm.submit("demo.echo", {"message": "x"}, prio="HIGH")
        pending = tm.submit("demo.sleep", {"seconds": 5})
        assert tm.wait(pending.id, timeout=0.5).status in ("QUEUED", "ACTIVE")
        assert tm.cancel(pending.id).status in ("CANCELLED", "ACTIVE")


async def test_async_client_submits_and_waits(server: Server, server_redis: Redis) -> None:
    async with AsyncClient(server.graphql_url) as tm:
        job = await tm.submit("demo.echo", {"message": "async"})
        done = await tm.wait(job.id, timeout=15)
        assert done.status == "COMPLETE" and done.result == {"message": "async"}
        assert (await tm.jobs(first=5, status="COMPLETE")).jobs[0].id == job.id


async def test_both_clients_report_a_subscription_error_the_same_way(
        server: Server, server_redis: Redis) -> None:
    with Client(server.graphql_url) as tm, pytest.raises(RemoteError) as sync_error:
        tm.wait("default:no-such-job", timeout=10)
    async with AsyncClient(server.graphql_url) as atm:
        with pytest.raises(RemoteError) as async_error:
            await atm.wait("default:no-such-job", timeout=10)
    assert sync_error.value.code == async_error.value.code == "NOT_FOUND"


def test_unreachable_server_is_a_clear_error() -> None:
    with Client(f"http://127.0.0.1:{free_port()}/graphql") as tm, \
            pytest.raises(ServerUnavailableError, match="cannot reach"):
        tm.get("default:x")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskmaster", "-q", *args], env=base_env(),
                          capture_output=True, text=True, timeout=60)


def test_cli_workers_top_follow_and_json(server: Server, server_redis: Redis) -> None:
    url = ("--url", server.graphql_url)
    # The store was just flushed: wait for the worker's next report (every 5 s).
    workers = wait_until(lambda: (done := _cli("workers", *url)).returncode == 0
                         and "default=10" in done.stdout and done, timeout_s=15,
                         message="worker listed")
    assert workers
    as_json = json.loads(_cli("workers", "--json", *url).stdout)
    assert as_json[0]["concurrency"] == [{"queue": "default", "concurrency": 10}]
    job_id = json.loads(_cli("submit", "demo.sleep", "--payload", '{"seconds": 0.3}',
                             *url).stdout)["id"]
    followed = _cli("job", job_id, "--follow", *url)
    assert followed.returncode == 0 and json.loads(followed.stdout)["status"] == "COMPLETE"
    top = _cli("top", "--once", *url)
    assert top.returncode == 0 and "WAIT P50/P99 MS" in top.stdout and "default" in top.stdout
    queues = json.loads(_cli("queues", "--json", *url).stdout)
    assert queues[0]["name"] == "default" and queues[0]["waitP50Ms"] is not None
    assert "completedPerMinute" in queues[0]
    listed = json.loads(_cli("jobs", "--json", "--status", "complete", *url).stdout)
    assert listed[0]["id"] == job_id
