"""Every job operation over GraphQL, against the real server and worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from tests.fixtures.server import Server
from tests.fixtures.waiting import eventually

FIELDS = "id status priority attempts maxAttempts error scheduledFor idempotencyKey" \
         " history { type }"


def gql(server: Server, query: str, **variables: Any) -> dict[str, Any]:
    return server.graphql(query, variables)


def submit(server: Server, **job_input: Any) -> dict[str, Any]:
    body = gql(server, f"mutation($i: SubmitJobInput!) {{ submitJob(input: $i) {{ {FIELDS} }} }}",
               i=job_input)
    assert "errors" not in body, body
    return body["data"]["submitJob"]  # type: ignore[no-any-return]


def job(server: Server, job_id: str) -> dict[str, Any]:
    body = gql(server, f"query($id: ID!) {{ job(id: $id) {{ {FIELDS} }} }}", id=job_id)
    return body["data"]["job"]  # type: ignore[no-any-return]


def code(body: dict[str, Any]) -> str:
    return body["errors"][0]["extensions"]["code"]  # type: ignore[no-any-return]


async def until(server: Server, job_id: str, *statuses: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        current = job(server, job_id)
        return current if current["status"] in statuses else None

    return await eventually(reached, timeout_s=15, message=f"{job_id} in {statuses}")


async def test_cancel_retry_and_priority_of_a_scheduled_job(server: Server,
                                                            server_redis: Redis) -> None:
    later = submit(server, function="demo.echo", payload={"message": "x"}, delaySeconds=3600)
    assert later["status"] == "SCHEDULED" and later["scheduledFor"]
    moved = gql(server, "mutation($id: ID!) { setJobPriority(id: $id, priority: CRITICAL)"
                " { priority history { type } } }", id=later["id"])["data"]["setJobPriority"]
    assert moved["priority"] == "CRITICAL"
    assert moved["history"][-1]["type"] == "priority_changed"

    cancel = "mutation($id: ID!) { cancelJob(id: $id) { status } }"
    assert gql(server, cancel, id=later["id"])["data"]["cancelJob"]["status"] == "CANCELLED"
    assert code(gql(server, cancel, id=later["id"])) == "CONFLICT"

    retried = gql(server, "mutation($id: ID!) { retryJob(id: $id) { status } }",
                  id=later["id"])["data"]["retryJob"]
    assert retried["status"] in ("QUEUED", "ACTIVE", "COMPLETE")
    done = await until(server, later["id"], "COMPLETE")
    assert [e["type"] for e in done["history"]][-4:] == [
        "cancelled", "retried", "started", "completed"]
    assert code(gql(server, "mutation { setJobPriority(id: \"default:nope\", priority: LOW)"
                            " { id } }")) == "NOT_FOUND"


async def test_dead_letters_can_be_listed_replayed_and_purged(server: Server,
                                                              server_redis: Redis) -> None:
    failed = [submit(server, function="demo.fail", payload={"message": f"boom {i}"},
                     maxAttempts=1) for i in range(3)]
    for item in failed:
        await until(server, item["id"], "FAILED")
    listing = gql(server, """{ deadLetters(function: "demo.fail", errorContains: "BOOM 1")
        { edges { node { id error } } pageInfo { hasNextPage } } }""")["data"]["deadLetters"]
    assert [e["node"]["id"] for e in listing["edges"]] == [failed[1]["id"]]
    assert listing["edges"][0]["node"]["error"] == "RuntimeError: boom 1"

    replayed = gql(server, "mutation($ids: [ID!]) { replayDeadLetters(ids: $ids) }",
                   ids=[failed[0]["id"]])["data"]["replayDeadLetters"]
    assert replayed == 1
    again = await until(server, failed[0]["id"], "FAILED")
    assert "replayed" in [e["type"] for e in again["history"]] and again["attempts"] == 2

    purged = gql(server, 'mutation { purgeDeadLetters(filter: {function: "demo.fail"}) }')
    assert purged["data"]["purgeDeadLetters"] == 3
    assert code(gql(server, "query($id: ID!) { job(id: $id) { id } }",
                    id=failed[2]["id"])) == "NOT_FOUND"
    assert code(gql(server, "mutation { replayDeadLetters }")) == "INVALID_ARGUMENT"


async def test_jobs_are_listed_newest_first_with_cursors_and_queues_show_depths(
        server: Server, server_redis: Redis) -> None:
    ids = [submit(server, function="demo.echo", payload={"message": str(i)}, delaySeconds=60,
                  priority="LOW")["id"] for i in range(3)]
    query = """query($after: String) { jobs(filter: {status: SCHEDULED, priority: LOW},
        first: 2, after: $after) { edges { cursor node { id } }
        pageInfo { hasNextPage endCursor } } }"""
    first = gql(server, query, after=None)["data"]["jobs"]
    second = gql(server, query, after=first["pageInfo"]["endCursor"])["data"]["jobs"]
    listed = [e["node"]["id"] for e in first["edges"] + second["edges"]]
    assert listed == ids[::-1]
    assert first["pageInfo"]["hasNextPage"] and not second["pageInfo"]["hasNextPage"]
    assert code(gql(server, "{ jobs(first: 0) { edges { cursor } } }")) == "INVALID_ARGUMENT"
    assert code(gql(server, '{ jobs(after: "garbage!") { edges { cursor } } }')) \
        == "INVALID_ARGUMENT"
    queues = gql(server, """{ queues { name queued scheduled active deadLettered
        queuedByPriority { critical high normal low } } }""")["data"]["queues"]
    default = next(q for q in queues if q["name"] == "default")
    assert default["scheduled"] == 3


async def test_idempotency_key_and_run_at(server: Server, server_redis: Redis) -> None:
    first = submit(server, function="demo.echo", payload={"message": "once"},
                   idempotencyKey="invoice-7")
    second = submit(server, function="demo.echo", payload={"message": "once"},
                    idempotencyKey="invoice-7")
    assert first["id"] == second["id"] and second["idempotencyKey"] == "invoice-7"
    clash = gql(server, "mutation($i: SubmitJobInput!) { submitJob(input: $i) { id } }",
                i={"function": "demo.echo", "payload": {"message": "other"},
                   "idempotencyKey": "invoice-7"})
    assert code(clash) == "CONFLICT"
    assert clash["errors"][0]["extensions"]["id"] == first["id"]

    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    planned = submit(server, function="demo.echo", payload={"message": "later"}, runAt=at)
    assert planned["status"] == "SCHEDULED"
    assert abs(datetime.fromisoformat(planned["scheduledFor"]) - datetime.fromisoformat(at)) \
        < timedelta(seconds=1)
    both = gql(server, "mutation($i: SubmitJobInput!) { submitJob(input: $i) { id } }",
               i={"function": "demo.echo", "payload": {"message": "x"}, "runAt": at,
                  "delaySeconds": 5})
    assert code(both) == "INVALID_ARGUMENT"
