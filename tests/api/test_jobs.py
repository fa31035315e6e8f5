"""GraphQL over real HTTP to a real uvicorn API, with a real worker process."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.fixtures.server import Server
from tests.fixtures.waiting import eventually

SUBMIT = """
mutation($input: SubmitJobInput!) {
  submitJob(input: $input) { id function queue priority status attempts maxAttempts payload }
}"""
JOB = """
query($id: ID!) {
  job(id: $id) {
    id status result error attempts maxAttempts progress plugin version
    enqueuedAt startedAt completedAt
    history { type attempt plugin version error }
  }
}"""


def submit(server: Server, **job_input: Any) -> dict[str, Any]:
    return server.graphql(SUBMIT, {"input": job_input})


async def wait_for_status(server: Server, job_id: str, *statuses: str) -> dict[str, Any]:
    def current() -> dict[str, Any] | None:
        job: dict[str, Any] = server.graphql(JOB, {"id": job_id})["data"]["job"]
        return job if job["status"] in statuses else None

    return await eventually(current, timeout_s=15, message=f"job in {statuses}")


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") in (None, {"submitJob": None}, {"job": None}), body
    (error,) = body["errors"]
    return error  # type: ignore[no-any-return]


async def test_submitted_job_completes_with_result_and_version(
        server: Server, server_redis: Redis) -> None:
    body = submit(server, function="demo.echo", payload={"message": "hi"}, priority="HIGH")
    job = body["data"]["submitJob"]
    assert job["function"] == "demo.echo" and job["queue"] == "default"
    assert job["priority"] == "HIGH" and job["maxAttempts"] == 5
    assert job["status"] in ("QUEUED", "ACTIVE", "COMPLETE")  # the worker may be quick
    assert job["payload"] == {"message": "hi"}
    done = await wait_for_status(server, job["id"], "COMPLETE", "FAILED")
    assert done["status"] == "COMPLETE"
    assert done["result"] == {"message": "hi"}
    assert done["error"] is None
    assert (done["plugin"], done["version"]) == ("taskmaster-fn-demo", "1.0.0")
    assert done["attempts"] == 1 and done["progress"] == 1.0
    assert done["enqueuedAt"] <= done["startedAt"] <= done["completedAt"]
    assert [e["type"] for e in done["history"]] == ["submitted", "started", "completed"]
    assert done["history"][1]["version"] == "1.0.0"


async def test_failing_job_records_every_attempt_and_its_error(server: Server,
                                                             server_redis: Redis) -> None:
    body = submit(server, function="demo.fail", payload={"message": "smtp down"},
                  maxAttempts=2)
    done = await wait_for_status(server, body["data"]["submitJob"]["id"], "FAILED")
    assert done["attempts"] == 2 and done["maxAttempts"] == 2
    assert done["error"] == "RuntimeError: smtp down"
    started = [e for e in done["history"] if e["type"] == "started"]
    assert [(e["attempt"], e["version"]) for e in started] == [(1, "1.0.0"), (2, "1.0.0")]
    assert [e["type"] for e in done["history"][-2:]] == ["failed", "dead_lettered"]


@pytest.mark.parametrize(("payload", "field", "problem"), [
    ({"message": 5}, "$.message", "Expected `str`, got `int`"),
    ({}, "$", "missing required field `message`"),
    ({"message": "hi", "mesage": "typo"}, "$.mesage", "unknown field 'mesage'"),
    ([1, 2], "$", "Expected `object`, got `array`"),
])
async def test_invalid_payload_is_rejected_with_its_path_and_nothing_is_stored(
        server: Server, server_redis: Redis, payload: Any, field: str, problem: str) -> None:
    error = only_error(submit(server, function="demo.echo", payload=payload))
    assert error["extensions"]["code"] == "INVALID_PAYLOAD"
    assert error["extensions"]["field"] == field
    assert problem in error["message"]
    assert await server_redis.keys("taskmaster:{default}:job:*") == []


async def test_unknown_function_lists_the_loaded_ones(server: Server, server_redis: Redis) -> None:
    error = only_error(submit(server, function="demo.ecko", payload={"message": "hi"}))
    assert error["extensions"]["code"] == "UNKNOWN_FUNCTION"
    assert error["extensions"]["loaded"] == ["demo.echo", "demo.fail", "demo.noop", "demo.sleep"]
    assert "taskmaster functions list" in error["message"]
    assert await server_redis.keys("taskmaster:*:job:*") == []


@pytest.mark.parametrize(("job_input", "argument"), [
    ({"maxAttempts": 0}, "maxAttempts"),
    ({"delaySeconds": -1}, "delaySeconds"),
    ({"timeoutSeconds": 0}, "timeoutSeconds"),
    ({"queue": "a:b"}, "queue"),
    ({"queue": "{slot}"}, "queue"),
])
async def test_out_of_range_options_are_invalid_arguments(
        server: Server, server_redis: Redis, job_input: dict[str, Any], argument: str) -> None:
    error = only_error(submit(server, function="demo.echo", payload={"message": "x"},
                              **job_input))
    assert error["extensions"]["code"] == "INVALID_ARGUMENT"
    assert error["extensions"]["argument"] == argument
    assert await server_redis.keys("taskmaster:*:job:*") == []


@pytest.mark.parametrize("job_id", ["default:no-such-job", "nonsense", "a:b:c", ":x"])
async def test_job_not_found(server: Server, server_redis: Redis, job_id: str) -> None:
    error = only_error(server.graphql(JOB, {"id": job_id}))
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["extensions"]["id"] == job_id


def test_functions_publish_their_input_schema(server: Server) -> None:
    body = server.graphql("{ functions { name plugin version queue inputSchema } }")
    by_name = {f["name"]: f for f in body["data"]["functions"]}
    assert set(by_name) == {"demo.echo", "demo.fail", "demo.noop", "demo.sleep"}
    echo = by_name["demo.echo"]
    assert (echo["plugin"], echo["version"], echo["queue"]) == (
        "taskmaster-fn-demo", "1.0.0", "default")
    schema = echo["inputSchema"]
    target = schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    assert target["properties"]["message"] == {"type": "string"}
    assert target["required"] == ["message"]


def test_syntax_errors_carry_a_code(server: Server) -> None:
    error = only_error(server.graphql("{ job(id: "))
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_mutations_are_refused_over_get(server: Server) -> None:
    response = httpx.get(server.graphql_url, params={
        "query": 'mutation { submitJob(input: {function: "demo.echo"}) { id } }'})
    assert response.status_code in (400, 405)


def test_graphiql_is_served_offline(server: Server) -> None:
    page = httpx.get(server.graphql_url, headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    assert "unpkg.com" not in page.text and "cdn" not in page.text.lower()
    assets = [part.split('"')[0] for part in page.text.split('="/static/graphiql/')[1:]]
    assert len(assets) == 7
    for asset in assets:
        response = httpx.get(f"{server.url}/static/graphiql/{asset}")
        assert response.status_code == 200, asset
        assert len(response.content) > 500, asset


def test_a_document_served_from_the_cache_still_checks_its_variables(server: Server) -> None:
    first = submit(server, function="demo.echo", payload={"message": "a"})
    again = submit(server, function="demo.echo", payload={"message": "b"})  # cached document
    assert first["data"]["submitJob"]["id"] != again["data"]["submitJob"]["id"]
    error = only_error(submit(server, function="demo.echo", payload={"message": "c"},
                              priority="URGENT"))
    assert "URGENT" in error["message"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    too_deep = "query { " + "job(id: \"default:x\") { " * 12 + "id" + " }" * 13
    errors = server.graphql(too_deep)["errors"]
    assert any("exceeds maximum operation depth" in e["message"] for e in errors)
    assert {e["extensions"]["code"] for e in errors} == {"GRAPHQL_VALIDATION_FAILED"}


def test_documents_over_the_alias_or_token_limit_are_refused(server: Server) -> None:
    aliases = "{ " + " ".join(f"a{i}: __typename" for i in range(31)) + " }"
    error = only_error(server.graphql(aliases))
    assert "aliases" in error["message"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    tokens = "{ " + "__typename " * 5001 + "}"
    error = only_error(server.graphql(tokens))
    assert "more than 5000 tokens" in error["message"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
