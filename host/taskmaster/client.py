"""A small client of the GraphQL API, used by the CLI's job commands."""

from __future__ import annotations

import time
from typing import Any

import httpx

from taskmaster.errors import RemoteError, ServerUnavailableError

JOB_FIELDS = """
  id function queue priority status payload result error attempts maxAttempts progress
  plugin version idempotencyKey enqueuedAt scheduledFor startedAt completedAt
  history { type at attempt worker plugin version message error delaySeconds progress }
"""
LIST_FIELDS = "id function queue priority status attempts maxAttempts error enqueuedAt"
FUNCTION_FIELDS = """name plugin version queue state loadError
  workers { worker host pid version state }"""
RELOAD = f"""mutation {{ reloadFunctions {{ converged loaded unloaded rejected
  functions {{ {FUNCTION_FIELDS} }}
  workers {{ id host pid loadedVersions {{ plugin version }} }} }} }}"""
SUBMIT = f"""
mutation Submit($input: SubmitJobInput!) {{ submitJob(input: $input) {{ {JOB_FIELDS} }} }}
"""
GET_JOB = f"query Job($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"
TERMINAL = {"COMPLETE", "FAILED", "CANCELLED"}


class TaskmasterClient:
    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        self.url = url
        self._http = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one operation; a GraphQL error becomes a RemoteError with its code."""
        try:
            response = self._http.post(self.url, json={"query": query, "variables": variables})
        except httpx.TransportError as exc:
            raise ServerUnavailableError(
                f"cannot reach the TaskMaster server at {self.url} ({exc});"
                " is `taskmaster serve` running? (--url / TASKMASTER_SERVER_URL)") from None
        try:
            body = response.json()
        except ValueError:
            raise ServerUnavailableError(
                f"{self.url} answered HTTP {response.status_code} without GraphQL") from None
        errors = body.get("errors") or []
        if errors:
            first = errors[0]
            extensions = dict(first.get("extensions") or {})
            code = str(extensions.pop("code", "INTERNAL"))
            raise RemoteError(code, first.get("message", "unknown error"), **extensions)
        data: dict[str, Any] = body["data"]
        return data

    def submit(self, job_input: dict[str, Any]) -> dict[str, Any]:
        job: dict[str, Any] = self.execute(SUBMIT, {"input": job_input})["submitJob"]
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.execute(GET_JOB, {"id": job_id})["job"]
        return job

    def act(self, mutation: str, job_id: str, **arguments: str) -> dict[str, Any]:
        """cancelJob, retryJob or setJobPriority on one job."""
        extra = "".join(f", {name}: {value}" for name, value in arguments.items())
        job: dict[str, Any] = self.execute(
            f"mutation($id: ID!) {{ {mutation}(id: $id{extra}) {{ {JOB_FIELDS} }} }}",
            {"id": job_id})[mutation]
        return job

    def dead_letters(self, *, first: int, **filters: str | None) -> list[dict[str, Any]]:
        query = f"""query($queue: String, $function: String, $errorContains: String,
            $first: Int!) {{ deadLetters(queue: $queue, function: $function,
            errorContains: $errorContains, first: $first) {{ edges {{ node {{ {LIST_FIELDS} }} }}
            }} }}"""
        data = self.execute(query, {"first": first, **filters})
        return [edge["node"] for edge in data["deadLetters"]["edges"]]

    def jobs(self, *, first: int, **filters: str | None) -> list[dict[str, Any]]:
        query = f"""query($filter: JobFilter, $first: Int!) {{ jobs(filter: $filter,
            first: $first) {{ edges {{ node {{ {LIST_FIELDS} }} }} }} }}"""
        flt = {k: v for k, v in filters.items() if v is not None}
        data = self.execute(query, {"filter": flt, "first": first})
        return [edge["node"] for edge in data["jobs"]["edges"]]

    def dead_letter_action(self, mutation: str, ids: list[str] | None,
                           flt: dict[str, str] | None) -> int:
        """replayDeadLetters or purgeDeadLetters; returns how many jobs it touched."""
        query = f"""mutation($ids: [ID!], $filter: DeadLetterFilter) {{
            {mutation}(ids: $ids, filter: $filter) }}"""
        count: int = self.execute(query, {"ids": ids, "filter": flt})[mutation]
        return count

    def queues(self) -> list[dict[str, Any]]:
        queues: list[dict[str, Any]] = self.execute(
            "{ queues { name queued active scheduled deadLettered retainedFinished"
            " queuedByPriority { critical high normal low } } }")["queues"]
        return queues

    def functions(self) -> list[dict[str, Any]]:
        functions: list[dict[str, Any]] = self.execute(f"{{ functions {{ {FUNCTION_FIELDS} }} }}"
                                                       )["functions"]
        return functions

    def reload(self) -> dict[str, Any]:
        result: dict[str, Any] = self.execute(RELOAD)["reloadFunctions"]
        return result

    def wait(self, job_id: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        """Poll until the job is terminal (or timeout_s passes) and return it."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        delay = 0.02
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                return job
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
