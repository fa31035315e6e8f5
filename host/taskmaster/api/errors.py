"""The one place where errors become GraphQL errors with `extensions.code`.

TaskmasterErrors keep their message and carry their code and details; GraphQL syntax and
validation errors get GRAPHQL_VALIDATION_FAILED; anything else is logged with its
traceback and reaches the client only as "Internal server error" (INTERNAL) with an id
to find it in the log.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql.error import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

from taskmaster.errors import TaskmasterError

logger = logging.getLogger(__name__)

INTERNAL = "INTERNAL"
VALIDATION = "GRAPHQL_VALIDATION_FAILED"


def _is_unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, TaskmasterError | GraphQLError)


def translate(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    if isinstance(original, TaskmasterError):
        message, extensions = original.message, {"code": original.code, **original.details}
    elif _is_unexpected(error):
        incident = getattr(error, "incident", None) or uuid.uuid4().hex[:12]
        message, extensions = f"Internal server error (incident {incident})", {
            "code": INTERNAL, "incident": incident}
    else:
        message = error.message
        extensions = {"code": VALIDATION, **(error.extensions or {})}
    return GraphQLError(message, nodes=error.nodes, source=error.source,
                        positions=error.positions, path=error.path, extensions=extensions)


class ErrorCodes(SchemaExtension):
    """Rewrites every error of a result into the TaskMaster error contract, for HTTP
    results and for each result a subscription streams."""

    def on_operation(self) -> Iterator[None]:
        yield
        _translate_errors(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        _translate_errors(result)  # before the transport sends it
        yield


def _translate_errors(result: Any) -> None:
    errors = getattr(result, "errors", None)
    if result is not None and errors:
        result.errors = [e if _translated(e) else translate(e) for e in errors]


def _translated(error: GraphQLError) -> bool:
    return error.original_error is None and "code" in (error.extensions or {})


class TaskmasterSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        # Strawberry logs every error with a traceback; expected ones (bad input,
        # unknown function) are the client's business, so log only the unexpected.
        for error in errors:
            if _is_unexpected(error):
                incident = uuid.uuid4().hex[:12]
                error.incident = incident  # type: ignore[attr-defined]
                logger.error("unexpected error in GraphQL operation (incident %s)", incident,
                             exc_info=error.original_error)
