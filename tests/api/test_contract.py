"""The published contract: SDL file, example operations, SDK surface, plugin guide."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import taskmaster
from graphql import (
    build_client_schema,
    build_schema,
    get_introspection_query,
    lexicographic_sort_schema,
    print_schema,
)
from taskmaster import hookspecs
from taskmaster.api.schema import schema_sdl
from tests.fixtures.graphql_ws import graphql_socket
from tests.fixtures.server import Server
from tests.fixtures.waiting import wait_until

ROOT = Path(__file__).parent.parent.parent
OPERATIONS = ROOT / "graphql" / "operations"


def test_schema_file_matches_the_served_schema() -> None:
    assert (ROOT / "graphql" / "schema.graphql").read_text() == schema_sdl(), (
        "graphql/schema.graphql is stale: run `taskmaster schema > graphql/schema.graphql`")


def test_schema_command_prints_the_served_schema() -> None:
    printed = subprocess.run([sys.executable, "-m", "taskmaster", "schema"], check=True,
                             capture_output=True, text=True).stdout
    assert printed == schema_sdl()


def test_served_introspection_matches_the_file(server: Server) -> None:
    served = server.graphql(get_introspection_query(specified_by_url=True))["data"]
    from_file = build_schema((ROOT / "graphql" / "schema.graphql").read_text())
    assert print_schema(lexicographic_sort_schema(build_client_schema(served))) == \
        print_schema(lexicographic_sort_schema(from_file))


def test_every_example_operation_runs_against_the_server(server: Server) -> None:
    documents = sorted(OPERATIONS.glob("*.graphql"))
    assert len(documents) >= 12
    submitted = server.graphql((OPERATIONS / "submit-job.graphql").read_text(), json.loads(
        (OPERATIONS / "submit-job.variables.json").read_text()))["data"]["submitJob"]
    # Each `id` placeholder gets a job in the state the operation needs.
    waiting = _submit(server, delaySeconds=3600)
    cancelled = _submit(server, delaySeconds=3600)
    server.graphql("mutation($id: ID!) { cancelJob(id: $id) { id } }", {"id": cancelled})
    ids = {"cancel-job": waiting, "set-job-priority": waiting, "retry-job": cancelled}
    for document in sorted(documents, key=lambda d: d.stem == "cancel-job"):
        variables_file = document.with_suffix(".variables.json")
        variables = json.loads(variables_file.read_text()) if variables_file.exists() else {}
        if "id" in variables:
            variables["id"] = ids.get(document.stem, submitted["id"])
        if re.search(r"^subscription\b", document.read_text(), re.MULTILINE):
            body = asyncio.run(_first_message(server, document.read_text(), variables))
        else:
            body = server.graphql(document.read_text(), variables)
        assert "errors" not in body, (document.name, body)
        assert body["data"], document.name
    job = wait_until(lambda: _complete(server, submitted["id"]), timeout_s=15,
                     message="example job complete")
    assert job["result"] == {"message": "hi"}


async def _first_message(server: Server, query: str, variables: dict[str, object]
                         ) -> dict[str, object]:
    async with graphql_socket(server.url) as socket:
        sub = await socket.subscribe(query, **variables)
        if "jobEvents" in query:  # the firehose says nothing until something happens
            _submit(server)
        (payload,) = await socket.collect(sub, count=1)
        return payload


def _submit(server: Server, **options: object) -> str:
    body = server.graphql("mutation($i: SubmitJobInput!) { submitJob(input: $i) { id } }", {
        "i": {"function": "demo.echo", "payload": {"message": "x"}, **options}})
    return body["data"]["submitJob"]["id"]  # type: ignore[no-any-return]


def _complete(server: Server, job_id: str) -> dict[str, object] | None:
    job = server.graphql((OPERATIONS / "job.graphql").read_text(), {"id": job_id})["data"]["job"]
    return job if job["status"] == "COMPLETE" else None  # type: ignore[no-any-return]


def test_public_sdk_surface() -> None:
    assert taskmaster.__all__ == sorted(taskmaster.__all__)
    assert set(taskmaster.__all__) == {
        "Context", "Function", "NonRetryableError", "PluginContext", "Priority",
        "TaskmasterError", "__version__", "hookimpl"}


def test_every_hookspec_is_documented_in_the_function_author_guide() -> None:
    guide = (ROOT / "docs" / "writing-functions.md").read_text()
    specs = [name for name in dir(hookspecs) if name.startswith("taskmaster_")]
    assert specs == ["taskmaster_functions", "taskmaster_on_init", "taskmaster_on_shutdown"]
    for name in specs:
        assert f"`{name}" in guide, f"{name} is not documented in docs/writing-functions.md"
