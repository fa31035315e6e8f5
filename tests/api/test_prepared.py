"""Prepared submissions: which documents skip the executor, and that they answer exactly
as the executor does (the first request of a document takes the normal path, the next
ones the prepared one)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from graphql import parse
from taskmaster.api.prepared import prepare
from tests.fixtures.server import Server

ALL_FIELDS = ("__typename id function queue priority status payload result error attempts"
              " maxAttempts progress plugin version idempotencyKey enqueuedAt scheduledFor"
              " startedAt completedAt")


@pytest.mark.parametrize(("document", "prepared"), [
    ("mutation($i: SubmitJobInput!) { submitJob(input: $i) { id status } }", True),
    ("mutation M($i: [SubmitJobInput!]!) { out: submitJobs(inputs: $i) { key: id } }", True),
    (f"mutation($i: SubmitJobInput!) {{ submitJob(input: $i) {{ {ALL_FIELDS} }} }}", True),
    # Anything else is the executor's: history, fragments, directives, inline input,
    # two root fields, repeated response keys, a default value, a query.
    ("mutation($i: SubmitJobInput!) { submitJob(input: $i) { id history { type } } }", False),
    ("mutation($i: SubmitJobInput!) { submitJob(input: $i) { ...F } }"
     " fragment F on Job { id }", False),
    ("mutation($i: SubmitJobInput!, $s: Boolean!) { submitJob(input: $i) "
     "{ id @include(if: $s) } }", False),
    ('mutation { submitJob(input: {function: "demo.noop"}) { id } }', False),
    ("mutation($i: SubmitJobInput!) { a: submitJob(input: $i) { id } "
     "b: submitJob(input: $i) { id } }", False),
    ("mutation($i: SubmitJobInput!) { submitJob(input: $i) { id id } }", False),
    ('mutation($i: SubmitJobInput! = {function: "demo.noop"}) '
     "{ submitJob(input: $i) { id } }", False),
    ("query($id: ID!) { job(id: $id) { id } }", False),
])
def test_which_documents_are_prepared(document: str, prepared: bool) -> None:
    assert (prepare(parse(document)) is not None) is prepared


def _timeless(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in ("id", "k", "enqueuedAt", "scheduledFor",
                                                         "idempotencyKey")}


async def test_prepared_answers_equal_the_executors(server: Server) -> None:
    document = (f"mutation($i: [SubmitJobInput!]!) {{ jobs: submitJobs(inputs: $i) "
                f"{{ {ALL_FIELDS} k: id }} }}")
    tag = uuid.uuid4().hex

    def inputs(round_: str) -> list[dict[str, Any]]:
        return [{"function": "demo.echo", "payload": {"message": "hi"}, "priority": "HIGH",
                 "delaySeconds": 600, "maxAttempts": 3, "idempotencyKey": f"{tag}-{round_}"},
                {"function": "demo.noop", "queue": "default", "retryJitter": True}]

    normal = server.graphql(document, {"i": inputs("a")})  # validated here, then prepared
    prepared = server.graphql(document, {"i": inputs("b")})
    assert "errors" not in normal and "errors" not in prepared, (normal, prepared)
    first, second = normal["data"]["jobs"], prepared["data"]["jobs"]
    assert [list(job) for job in first] == [list(job) for job in second]  # same keys, order
    assert [_timeless(job) for job in first] == [_timeless(job) for job in second]
    assert second[0]["idempotencyKey"] == f"{tag}-b" and second[0]["k"] == second[0]["id"]
    assert second[0]["status"] == "SCHEDULED" and second[0]["priority"] == "HIGH"
    for job in second:
        assert datetime.fromisoformat(job["enqueuedAt"]).tzinfo is not None
    stored = server.graphql("query($id: ID!) { job(id: $id) { id maxAttempts } }",
                            {"id": second[0]["id"]})
    assert stored["data"]["job"] == {"id": second[0]["id"], "maxAttempts": 3}


async def test_what_the_prepared_path_cannot_decode_still_works(server: Server) -> None:
    document = "mutation($i: SubmitJobInput!) { submitJob(input: $i) { maxAttempts } }"
    server.graphql(document, {"i": {"function": "demo.noop"}})
    # graphql-core takes 2.0 as an Int; msgspec does not, so the executor answers.
    body = server.graphql(document, {"i": {"function": "demo.noop", "maxAttempts": 2.0}})
    assert body == {"data": {"submitJob": {"maxAttempts": 2}}}


@pytest.mark.parametrize(("variables", "code"), [
    ({"i": {"function": "nope.never"}}, "UNKNOWN_FUNCTION"),
    ({"i": {"function": "demo.echo", "payload": {"mesage": "typo"}}}, "INVALID_PAYLOAD"),
    ({"i": {"function": "demo.noop", "maxAttempts": 0}}, "INVALID_ARGUMENT"),
    ({"i": {"function": "demo.noop", "colour": "red"}}, "GRAPHQL_VALIDATION_FAILED"),
    ({"i": {"function": "demo.noop", "maxAttempts": 2**40}}, "GRAPHQL_VALIDATION_FAILED"),
])
async def test_errors_of_a_prepared_document_keep_their_codes(
        server: Server, variables: dict[str, Any], code: str) -> None:
    document = "mutation($i: SubmitJobInput!) { submitJob(input: $i) { id status } }"
    server.graphql(document, {"i": {"function": "demo.noop"}})
    body = server.graphql(document, variables)
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == code, error


async def test_an_invalid_batch_stores_nothing(server: Server) -> None:
    document = "mutation($i: [SubmitJobInput!]!) { submitJobs(inputs: $i) { id status } }"
    server.graphql(document, {"i": [{"function": "demo.noop"}]})
    key = uuid.uuid4().hex
    body = server.graphql(document, {"i": [
        {"function": "demo.noop", "idempotencyKey": key}, {"function": "nope.never"}]})
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "INVALID_BATCH"
    assert error["extensions"]["errors"][0]["index"] == 1
    # Had the first job been stored, its key would return it (QUEUED, or already run).
    again = server.graphql(document, {"i": [
        {"function": "demo.noop", "idempotencyKey": key, "delaySeconds": 600}]})
    assert again["data"]["submitJobs"][0]["status"] == "SCHEDULED"
