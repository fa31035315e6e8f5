"""JsonPostFastPath: the common GraphQL request, executed without the web framework's layers.

A POST of a JSON query or mutation is most of the API's traffic. Litestar's routing,
dependency injection (three task-group spawns per request) and Strawberry's view around
`schema.execute` cost more than the execution itself, so this ASGI wrapper hands such a
request straight to the same schema — same extensions, same limits, same error codes — and
writes the JSON answer; submissions in a known-valid document skip the executor too (see
prepared.py). Anything it is not sure about (another path, method or content
type, a body that is too big, not JSON, or not one plain operation, a request
Strawberry answers with an HTTP error) goes to the Litestar app untouched, body included,
so the exceptional cases keep exactly one implementation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from strawberry import Schema
from strawberry.exceptions import MissingQueryError
from strawberry.http import process_result
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from taskmaster.api.prepared import PreparedSubmissions

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ALLOWED = frozenset({OperationType.QUERY, OperationType.MUTATION})
_NO_SUBSCRIPTIONS = (b"subscriptions are served over WebSocket (graphql-transport-ws) at this"
                     b" path, not over POST")
_REQUEST_KEYS = frozenset({"query", "variables", "operationName", "extensions"})
_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"


class JsonPostFastPath:
    def __init__(self, app: ASGIApp, schema: Schema, *, path: str, max_body_bytes: int,
                 context: Callable[[], dict[str, Any] | None]) -> None:
        self.app = app
        self.schema = schema
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.context = context
        """The execution context; None while the app is not ready (then Litestar answers)."""
        self.prepared = PreparedSubmissions(schema)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._plain_json_post(scope):
            return await self.app(scope, receive, send)
        body, complete = await self._read(receive)
        request = _operation(body) if complete else None
        context = self.context() if request is not None else None
        result = None
        if request is not None and context is not None:
            prepared = await self.prepared.run(request, context["services"])
            if prepared is not None:
                return await _answer(send, 200, _JSON, msgspec.json.encode(prepared))
            try:
                result = await self.schema.execute(
                    request["query"], variable_values=request.get("variables"),
                    context_value=context, operation_name=request.get("operationName"),
                    allowed_operation_types=_ALLOWED,
                    operation_extensions=request.get("extensions"))
            except InvalidOperationTypeError:
                # Strawberry's view would run the subscription's generator as a plain
                # field and fail with an internal error, whatever the Accept header.
                return await _answer(send, 400, _TEXT, _NO_SUBSCRIPTIONS)
            except (CannotGetOperationTypeError, MissingQueryError):
                result = None  # Strawberry's view turns these into HTTP 400s
        if not isinstance(result, ExecutionResult):
            return await self.app(scope, _replay(body, complete, receive), send)
        await _answer(send, 200, _JSON, msgspec.json.encode(process_result(result)))

    def _plain_json_post(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            return False
        json = None
        for name, value in scope["headers"]:
            if name == b"content-type" and json is None:  # the first, as Litestar reads it
                json = value.split(b";", 1)[0].strip().lower() == b"application/json"
            elif name == b"content-length" and (not value.isdigit()
                                                or int(value) > self.max_body_bytes):
                return False
        return bool(json)

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        """The body, and whether that is all of it (False past the size limit or on
        disconnect: the app then reads the rest and answers as it would)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), False
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"".join(chunks), False
            if not message.get("more_body", False):
                return b"".join(chunks), True


def _operation(body: bytes) -> dict[str, Any] | None:
    """The request if it is one operation in the shapes the view accepts, else None."""
    try:
        request = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):  # nesting too deep: Litestar answers
        return None
    if not isinstance(request, dict) or not request.keys() <= _REQUEST_KEYS \
            or not isinstance(request.get("query"), str) \
            or not isinstance(request.get("variables"), dict | None) \
            or not isinstance(request.get("operationName"), str | None) \
            or not isinstance(request.get("extensions"), dict | None):
        return None
    return request


async def _answer(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A receive that yields the body already read, then whatever is left unread."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": not complete}

    return replay
