"""A small Python client of the TaskMaster GraphQL API, sync (`Client`) and async
(`AsyncClient`), returning typed results. This is what a producer service imports:

```python
from taskmaster.client import Client

with Client("http://127.0.0.1:8000/graphql") as tm:
    job = tm.submit("email.send", {"to": "a@example.com"}, priority="HIGH")
    done = tm.wait(job.id, timeout=60)        # follows the jobUpdates subscription
```
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
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
SUBMIT = f"mutation($input: SubmitJobInput!) {{ submitJob(input: $input) {{ {JOB_FIELDS} }} }}"
GET_JOB = f"query Job($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"
UPDATES = f"subscription($id: ID!) {{ jobUpdates(id: $id) {{ {JOB_FIELDS} }} }}"
JOBS = f"""query($filter: JobFilter, $first: Int!, $after: String) {{
  jobs(filter: $filter, first: $first, after: $after) {{
    edges {{ node {{ {JOB_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"""
TERMINAL = {"COMPLETE", "FAILED", "CANCELLED"}
OPTION_NAMES = {"priority": "priority", "queue": "queue", "delay_s": "delaySeconds",
                "run_at": "runAt", "max_attempts": "maxAttempts",
                "timeout_s": "timeoutSeconds", "idempotency_key": "idempotencyKey",
                "retry_base_s": "retryBaseSeconds", "retry_max_s": "retryMaxSeconds",
                "retry_jitter": "retryJitter"}


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class JobEvent:
    type: str
    at: datetime
    attempt: int | None = None
    version: str | None = None
    message: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Job:
    id: str
    function: str
    queue: str
    priority: str
    status: str
    payload: Any
    result: Any
    error: str | None
    attempts: int
    max_attempts: int
    progress: float | None
    plugin: str | None
    version: str | None
    enqueued_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    history: list[JobEvent] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Job:
        return cls(
            id=raw["id"], function=raw["function"], queue=raw["queue"],
            priority=raw["priority"], status=raw["status"], payload=raw["payload"],
            result=raw["result"], error=raw["error"], attempts=raw["attempts"],
            max_attempts=raw["maxAttempts"], progress=raw["progress"], plugin=raw["plugin"],
            version=raw["version"], enqueued_at=_time(raw["enqueuedAt"]),
            started_at=_time(raw["startedAt"]), completed_at=_time(raw["completedAt"]),
            history=[JobEvent(type=e["type"], at=datetime.fromisoformat(e["at"]),
                              attempt=e["attempt"], version=e["version"],
                              message=e["message"], error=e["error"])
                     for e in raw.get("history") or []])


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    has_next_page: bool
    end_cursor: str | None


def _input(function: str, payload: Any, options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown submit option(s): {', '.join(sorted(unknown))}")
    job_input = {"function": function, "payload": payload}
    for name, value in options.items():
        if value is not None:
            job_input[OPTION_NAMES[name]] = value.isoformat() if isinstance(
                value, datetime) else value
    return job_input


def _data(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ServerUnavailableError(
            f"{url} answered HTTP {response.status_code} without GraphQL") from None
    errors = body.get("errors") or []
    if errors:
        first = errors[0]
        extensions = dict(first.get("extensions") or {})
        code = str(extensions.pop("code", "INTERNAL"))
        raise RemoteError(code, first.get("message", "unknown error"), **extensions)
    data: dict[str, Any] = body["data"]
    return data


def _unreachable(url: str, exc: Exception) -> ServerUnavailableError:
    return ServerUnavailableError(
        f"cannot reach the TaskMaster server at {url} ({exc}); is `taskmaster serve`"
        " running? (--url / TASKMASTER_SERVER_URL)")


def _page(page: dict[str, Any]) -> JobPage:
    return JobPage([Job.parse(e["node"]) for e in page["edges"]],
                   page["pageInfo"]["hasNextPage"], page["pageInfo"]["endCursor"])


def _job_update(message: dict[str, Any]) -> Job | None:
    """The job in a jobUpdates `next` message; RemoteError for an error; None otherwise."""
    if message["type"] == "error":
        raise RemoteError("GRAPHQL_VALIDATION_FAILED", str(message["payload"]))
    if message["type"] != "next":
        return None
    payload = message["payload"]
    if payload.get("errors"):
        first = payload["errors"][0]
        raise RemoteError(first.get("extensions", {}).get("code", "INTERNAL"),
                          first.get("message", "subscription failed"))
    return Job.parse(payload["data"]["jobUpdates"])


def _ws_url(url: str) -> str:
    return url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)


class Client:
    """Synchronous client. `token` is sent as `Authorization: Bearer <token>`."""

    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 30.0) -> None:
        self.url = url
        self.token = token
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(timeout=timeout_s, headers=self._auth)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one operation; a GraphQL error becomes a RemoteError with its code."""
        try:
            response = self._http.post(self.url, json={"query": query, "variables": variables})
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None
        return _data(response, self.url)

    def submit(self, function: str, payload: Any = None, **options: Any) -> Job:
        return Job.parse(self.execute(SUBMIT, {"input": _input(function, payload, options)})
                         ["submitJob"])

    def get(self, job_id: str) -> Job:
        return Job.parse(self.execute(GET_JOB, {"id": job_id})["job"])

    def jobs(self, *, first: int = 50, after: str | None = None, **filters: Any) -> JobPage:
        data = self.execute(JOBS, {"filter": filters or None, "first": first, "after": after})
        return _page(data["jobs"])

    def cancel(self, job_id: str) -> Job:
        return Job.parse(self.execute(
            f"mutation($id: ID!) {{ cancelJob(id: $id) {{ {JOB_FIELDS} }} }}",
            {"id": job_id})["cancelJob"])

    def wait(self, job_id: str, timeout: float | None = None,
             on_update: Callable[[Job], None] | None = None) -> Job:
        """Follow the job until it ends (or `timeout` passes) and return its last state."""
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with connect(_ws_url(self.url), subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                         additional_headers=self._auth) as socket:
                socket.send(json.dumps({"type": "connection_init", "payload": {}}))
                json.loads(socket.recv(timeout=10))
                socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                    "query": UPDATES, "variables": {"id": job_id}}}))
                job: Job | None = None
                while True:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    try:
                        message = json.loads(socket.recv(timeout=left))
                    except TimeoutError:
                        return job or self.get(job_id)
                    if message["type"] == "complete":
                        return job or self.get(job_id)
                    update = _job_update(message)
                    if update is not None:
                        job = update
                        if on_update is not None:
                            on_update(job)
        except (OSError, WebSocketException) as exc:
            raise _unreachable(self.url, exc) from None

    # Raw helpers the CLI prints as they come.
    def raw_job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.execute(GET_JOB, {"id": job_id})["job"]
        return job

    def raw_submit(self, job_input: dict[str, Any]) -> dict[str, Any]:
        job: dict[str, Any] = self.execute(SUBMIT, {"input": job_input})["submitJob"]
        return job

    def act(self, mutation: str, job_id: str, **arguments: str) -> dict[str, Any]:
        """cancelJob, retryJob or setJobPriority on one job."""
        extra = "".join(f", {name}: {value}" for name, value in arguments.items())
        job: dict[str, Any] = self.execute(
            f"mutation($id: ID!) {{ {mutation}(id: $id{extra}) {{ {JOB_FIELDS} }} }}",
            {"id": job_id})[mutation]
        return job

    def raw_list(self, query_name: str, variables: dict[str, Any], arguments: str,
                 ) -> list[dict[str, Any]]:
        data = self.execute(f"query({arguments}) {{ {query_name}({_pass(arguments)})"
                            f" {{ edges {{ node {{ {LIST_FIELDS} }} }} }} }}", variables)
        return [edge["node"] for edge in data[query_name]["edges"]]

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
            " completedPerMinute failedPerMinute waitP50Ms waitP95Ms waitP99Ms"
            " queuedByPriority { critical high normal low } } }")["queues"]
        return queues

    def workers(self) -> list[dict[str, Any]]:
        workers: list[dict[str, Any]] = self.execute(
            "{ workers { id host pid queues concurrency { queue concurrency } currentJobs"
            " runningJobs loadedVersions { plugin version } lastHeartbeat } }")["workers"]
        return workers

    def functions(self) -> list[dict[str, Any]]:
        functions: list[dict[str, Any]] = self.execute(
            f"{{ functions {{ {FUNCTION_FIELDS} }} }}")["functions"]
        return functions

    def reload(self) -> dict[str, Any]:
        result: dict[str, Any] = self.execute(RELOAD)["reloadFunctions"]
        return result


def _pass(arguments: str) -> str:
    """`$a: T, $b: U` → `a: $a, b: $b`."""
    names = [part.split(":")[0].strip().lstrip("$") for part in arguments.split(",") if part]
    return ", ".join(f"{name}: ${name}" for name in names)


class AsyncClient:
    """The same as Client, for asyncio code."""

    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 30.0) -> None:
        self.url = url
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(timeout=timeout_s, headers=self._auth)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def execute(self, query: str, variables: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
        try:
            response = await self._http.post(self.url, json={"query": query,
                                                              "variables": variables})
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None
        return _data(response, self.url)

    async def submit(self, function: str, payload: Any = None, **options: Any) -> Job:
        data = await self.execute(SUBMIT, {"input": _input(function, payload, options)})
        return Job.parse(data["submitJob"])

    async def get(self, job_id: str) -> Job:
        return Job.parse((await self.execute(GET_JOB, {"id": job_id}))["job"])

    async def jobs(self, *, first: int = 50, after: str | None = None,
                   **filters: Any) -> JobPage:
        data = await self.execute(JOBS, {"filter": filters or None, "first": first,
                                         "after": after})
        return _page(data["jobs"])

    async def wait(self, job_id: str,
                   timeout: float | None = None) -> Job:  # noqa: ASYNC109 - as Client.wait
        """Follow the job's jobUpdates subscription until it ends (or the timeout)."""
        import asyncio

        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        job: Job | None = None
        try:
            async with asyncio.timeout(timeout), connect(
                    _ws_url(self.url), subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                    additional_headers=self._auth) as socket:
                await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
                await socket.recv()
                await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                    "query": UPDATES, "variables": {"id": job_id}}}))
                async for raw in socket:
                    message = json.loads(raw)
                    if message["type"] == "complete":
                        break
                    job = _job_update(message) or job
        except TimeoutError:
            pass
        except (OSError, WebSocketException) as exc:
            raise _unreachable(self.url, exc) from None
        return job or await self.get(job_id)
