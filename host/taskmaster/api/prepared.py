"""PreparedSubmissions: submitJob and submitJobs run without the generic GraphQL executor.

In a bulk submission graphql-core's variable coercion, Strawberry's argument conversion and
the completion of a thousand result objects cost more than storing the jobs. A document
that passed validation and the limits once (see DocumentCache) and is nothing but one of
these mutations — its input from one variable, a selection of the Job's scalar fields, no
fragments or directives — is prepared once: its variable is decoded by msgspec into the
same input fields, the same engine call runs, the selected fields are written directly.

What the prepared path is not sure of (a variable it cannot decode, an input the engine
refuses before storing anything) goes to the normal path, so each error keeps its one
implementation. Once jobs may have been stored, errors are answered here, with the same
codes: nothing is submitted twice.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.exceptions import RedisError
from strawberry import Schema
from strawberry.http import process_result
from strawberry.types import ExecutionResult

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    print_ast,
)
from taskmaster.api.document_cache import MAX_DOCUMENTS, validated_document
from taskmaster.api.errors import translate
from taskmaster.api.schema.inputs import PlainSubmitJobInput
from taskmaster.api.schema.mutations import submit_many, submit_one
from taskmaster.api.schema.types import as_datetime
from taskmaster.api.services import Services
from taskmaster.engine.jobs import JobView
from taskmaster.errors import StoreUnavailableError, TaskmasterError

logger = logging.getLogger(__name__)


def _at(ms: int | None) -> str | None:
    moment = as_datetime(ms)
    return moment.isoformat() if moment is not None else None  # Strawberry's DateTime


_FIELDS: dict[str, Callable[[JobView], Any]] = {
    "__typename": lambda _: "Job",
    "id": lambda v: v.id,
    "function": lambda v: v.function,
    "queue": lambda v: v.queue,
    "priority": lambda v: v.priority.name,
    "status": lambda v: v.status.name,
    "payload": lambda v: v.payload,
    "result": lambda v: v.result,
    "error": lambda v: v.error,
    "attempts": lambda v: v.attempts,
    "maxAttempts": lambda v: v.max_attempts,
    "progress": lambda v: None if v.progress is None else float(v.progress),
    "plugin": lambda v: v.plugin,
    "version": lambda v: v.version,
    "idempotencyKey": lambda v: v.idempotency_key,
    "enqueuedAt": lambda v: _at(v.enqueued_at_ms),
    "scheduledFor": lambda v: _at(v.scheduled_for_ms),
    "startedAt": lambda v: _at(v.started_at_ms),
    "completedAt": lambda v: _at(v.completed_at_ms),
}
"""The Job fields the prepared path writes, by GraphQL name, as the schema serialises them."""

_MUTATIONS = {"submitJob": ("input", "SubmitJobInput!"),
              "submitJobs": ("inputs", "[SubmitJobInput!]!")}

_Many = list[PlainSubmitJobInput]


@dataclass(frozen=True)
class Plan:
    many: bool
    response_key: str
    variable: str
    operation_name: str | None
    fields: tuple[tuple[str, Callable[[JobView], Any]], ...]
    node: FieldNode

    def write(self, view: JobView) -> dict[str, Any]:
        return {key: value(view) for key, value in self.fields}


def prepare(document: DocumentNode) -> Plan | None:
    """A plan if the document is one submitJob/submitJobs in the shape above, else None."""
    if len(document.definitions) != 1:
        return None
    operation = document.definitions[0]
    if not isinstance(operation, OperationDefinitionNode) or operation.directives \
            or operation.operation != OperationType.MUTATION \
            or len(operation.selection_set.selections) != 1:
        return None
    field = operation.selection_set.selections[0]
    if not isinstance(field, FieldNode) or field.directives or not field.arguments \
            or len(field.arguments) != 1 or field.name.value not in _MUTATIONS \
            or field.selection_set is None:
        return None
    argument_name, argument_type = _MUTATIONS[field.name.value]
    argument = field.arguments[0]
    if argument.name.value != argument_name or not isinstance(argument.value, VariableNode):
        return None
    variable = argument.value.name.value
    definitions = [d for d in operation.variable_definitions or ()
                   if d.variable.name.value == variable]
    if len(definitions) != 1 or definitions[0].default_value is not None \
            or definitions[0].directives or print_ast(definitions[0].type) != argument_type:
        return None
    fields: list[tuple[str, Callable[[JobView], Any]]] = []
    for selected in field.selection_set.selections:
        if not isinstance(selected, FieldNode) or selected.directives or selected.arguments \
                or selected.selection_set is not None or selected.name.value not in _FIELDS:
            return None
        key = selected.alias.value if selected.alias else selected.name.value
        if any(key == known for known, _ in fields):
            return None  # merging repeated fields is the executor's business
        fields.append((key, _FIELDS[selected.name.value]))
    return Plan(many=field.name.value == "submitJobs",
                response_key=field.alias.value if field.alias else field.name.value,
                variable=variable,
                operation_name=operation.name.value if operation.name else None,
                fields=tuple(fields), node=field)


class PreparedSubmissions:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._plans: OrderedDict[str, Plan | None] = OrderedDict()

    def plan(self, query: str) -> Plan | None:
        if query in self._plans:
            return self._plans[query]
        document = validated_document(self.schema, query)
        if document is None:  # not (yet) known to be valid: the normal path decides
            return None
        plan = self._plans[query] = prepare(document)
        while len(self._plans) > MAX_DOCUMENTS:
            self._plans.popitem(last=False)
        return plan

    async def run(self, request: dict[str, Any], services: Services
                  ) -> dict[str, Any] | None:
        """The response to the request, or None to have the normal path answer it."""
        plan = self.plan(request["query"])
        name = request.get("operationName")
        if plan is None or (name is not None and name != plan.operation_name):
            return None
        given = (request.get("variables") or {}).get(plan.variable)
        try:
            inputs = msgspec.convert(given, _Many) if plan.many \
                else [msgspec.convert(given, PlainSubmitJobInput)]
        except msgspec.ValidationError:
            return None
        try:
            if plan.many:
                views = await submit_many(services, inputs)
            else:
                views = [await submit_one(services, inputs[0])]
        except (StoreUnavailableError, RedisError) as exc:
            return self._failed(plan, exc)
        except TaskmasterError:
            # Refused before anything new was stored (invalid, unknown function, a reused
            # idempotency key): the normal path gives the same answer, with its error.
            return None
        except Exception as exc:  # reported as INTERNAL and logged, as the executor does
            return self._failed(plan, exc)
        written = [plan.write(view) for view in views]
        return {"data": {plan.response_key: written if plan.many else written[0]}}

    def _failed(self, plan: Plan, exc: Exception) -> dict[str, Any]:
        error = GraphQLError(str(exc), nodes=[plan.node], path=[plan.response_key],
                             original_error=exc)
        self.schema.process_errors([error])
        return dict(process_result(ExecutionResult(data=None, errors=[translate(error)])))
