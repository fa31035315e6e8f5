"""Subscriptions, metrics and bulk submission against the real server and WebSockets."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from tests.fixtures.graphql_ws import graphql_socket
from tests.fixtures.processes import Processes, log_of
from tests.fixtures.server import Server, base_env, healthy
from tests.fixtures.waiting import eventually, wait_until

SUBMIT = "mutation($i: SubmitJobInput!) { submitJob(input: $i) { id } }"
EVENTS = """subscription($queue: String, $function: String, $since: String) {
  jobEvents(queue: $queue, function: $function, since: $since)
  { id jobId type status function queue version } }"""


def submit(server: Server, function: str, payload: dict[str, Any], **options: Any) -> str:
    body = server.graphql(SUBMIT, {"i": {"function": function, "payload": payload, **options}})
    assert "errors" not in body, body
    return body["data"]["submitJob"]["id"]  # type: ignore[no-any-return]


async def test_job_updates_streams_every_change_until_the_end(server: Server,
                                                              server_redis: Redis) -> None:
    job_id = submit(server, "demo.sleep", {"seconds": 0.6})
    async with graphql_socket(server.url) as socket:
        sub = await socket.subscribe(
            "subscription($id: ID!) { jobUpdates(id: $id) { status progress attempts result } }",
            id=job_id)
        updates = [p["data"]["jobUpdates"] for p in await socket.collect(sub)]
    assert updates[0]["status"] in ("QUEUED", "ACTIVE")
    assert updates[-1] == {"status": "COMPLETE", "progress": 1.0, "attempts": 1,
                           "result": {"slept": 0.6}}
    assert any(u["status"] == "ACTIVE" and 0 < u["progress"] < 1 for u in updates), updates


async def test_job_events_resume_after_a_given_event_without_gaps(
        server: Server, server_redis: Redis) -> None:
    async with graphql_socket(server.url) as socket:
        sub = await socket.subscribe(EVENTS, function="demo.echo")
        first = submit(server, "demo.echo", {"message": "one"})
        events = [p["data"]["jobEvents"] for p in await socket.collect(sub, count=3)]
    assert [(e["jobId"], e["type"]) for e in events] == [
        (first, "submitted"), (first, "started"), (first, "completed")]
    assert events[2]["status"] == "COMPLETE" and events[2]["version"] == "1.0.0"

    # Disconnected after the first event; meanwhile more happens.
    second = submit(server, "demo.echo", {"message": "two"})
    await eventually(lambda: server.graphql("query($id: ID!) { job(id: $id) { status } }",
                                            {"id": second})["data"]["job"]["status"]
                     == "COMPLETE", message="second job done")
    async with graphql_socket(server.url) as socket:
        sub = await socket.subscribe(EVENTS, function="demo.echo", since=events[0]["id"])
        resumed = [p["data"]["jobEvents"] for p in await socket.collect(sub, count=5)]
    assert [(e["jobId"], e["type"]) for e in resumed] == [
        (first, "started"), (first, "completed"),
        (second, "submitted"), (second, "started"), (second, "completed")]


async def test_events_reach_subscribers_of_every_api_process(
        server: Server, server_redis: Redis, server_store_url: str,
        processes: Processes) -> None:
    from taskmaster.store.embedded import free_port

    port = free_port()
    other = processes.taskmaster("api", "--port", str(port),
                                 env=base_env(TASKMASTER_REDIS_URL=server_store_url), name="api2")
    other_url = f"http://127.0.0.1:{port}"
    wait_until(lambda: healthy(other_url) or other.poll() is not None, timeout_s=30,
               message="second API up")
    assert other.poll() is None, log_of(other)
    async with graphql_socket(other_url) as socket:
        # `since` the beginning: no race with the hub of this process finding the queue.
        sub = await socket.subscribe(EVENTS, queue="default", since="0-0")
        job_id = submit(server, "demo.echo", {"message": "across"})  # on the first API
        events = [p["data"]["jobEvents"] for p in await socket.collect(sub, count=3)]
    assert [(e["jobId"], e["type"]) for e in events] == [
        (job_id, "submitted"), (job_id, "started"), (job_id, "completed")]


async def test_metrics_count_a_known_mix_and_prometheus_can_read_them(
        server: Server, server_redis: Redis) -> None:
    ids = [submit(server, "demo.echo", {"message": "m"}) for _ in range(3)]
    ids += [submit(server, "demo.fail", {"retryable": False}) for _ in range(2)]
    ids.append(submit(server, "demo.fail", {}, maxAttempts=2, retryBaseSeconds=0.1))

    def all_finished() -> bool:
        return all(server.graphql("query($id: ID!) { job(id: $id) { status } }", {"id": i})
                   ["data"]["job"]["status"] in ("COMPLETE", "FAILED") for i in ids)

    await eventually(all_finished, timeout_s=20, message="mix finished")
    points = server.graphql("""{ metrics(queue: "default", windowMinutes: 5) { submitted started
        completed failed retried deadLettered waitP99Ms runP50Ms } }""")["data"]["metrics"]
    assert len(points) == 5
    total = {k: sum(p[k] for p in points) for k in (
        "submitted", "started", "completed", "failed", "retried", "deadLettered")}
    assert total == {"submitted": 6, "started": 7, "completed": 3, "failed": 3, "retried": 1,
                     "deadLettered": 3}
    assert any(p["waitP99Ms"] is not None for p in points)
    echo = server.graphql('{ metrics(function: "demo.echo", windowMinutes: 2) { completed } }')
    assert sum(p["completed"] for p in echo["data"]["metrics"]) == 3

    text = httpx.get(f"{server.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(family: str, suffix: str = "", **labels: str) -> float:
        return sum(s.value for s in families[family].samples if s.name == family + suffix
                   and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("taskmaster_jobs_completed", "_total", function="demo.echo",
                 version="1.0.0") == 3
    assert value("taskmaster_jobs_dead_lettered", "_total", function="demo.fail") == 3
    assert value("taskmaster_jobs_submitted", "_total", queue="default") == 6
    assert value("taskmaster_job_wait_seconds", "_count", function="demo.echo") == 3
    assert value("taskmaster_job_run_seconds", "_count", function="demo.fail") == 4
    assert families["taskmaster_job_run_seconds"].type == "histogram"
    assert families["taskmaster_queue_jobs"].type == "gauge"


async def test_submit_jobs_is_all_or_nothing_with_per_item_errors(
        server: Server, server_redis: Redis) -> None:
    mutation = "mutation($i: [SubmitJobInput!]!) { submitJobs(inputs: $i) { id status } }"
    good = [{"function": "demo.echo", "payload": {"message": str(n)}} for n in range(3)]
    jobs = server.graphql(mutation, {"i": good})["data"]["submitJobs"]
    assert len({j["id"] for j in jobs}) == 3
    before = len(await server_redis.keys("taskmaster:{default}:job:*"))
    bad = [good[0], {"function": "demo.echo", "payload": {"message": 1}},
           {"function": "nope.nope", "payload": {}}]
    body = server.graphql(mutation, {"i": bad})
    error = body["errors"][0]
    assert error["extensions"]["code"] == "INVALID_BATCH"
    assert [(e["index"], e["code"]) for e in error["extensions"]["errors"]] == [
        (1, "INVALID_PAYLOAD"), (2, "UNKNOWN_FUNCTION")]
    assert len(await server_redis.keys("taskmaster:{default}:job:*")) == before
    too_many = server.graphql(mutation, {"i": [good[0]] * 1001})
    assert too_many["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"


def test_health_and_readiness(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
