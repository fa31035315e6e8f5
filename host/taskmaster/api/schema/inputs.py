"""GraphQL input types and their translation to engine arguments."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
import strawberry
from strawberry.scalars import JSON, is_scalar
from strawberry.types.arguments import InputContext
from strawberry.types.base import StrawberryOptional, get_object_definition

from taskmaster.api.schema.types import JobStatus, Priority
from taskmaster.engine.jobs import SubmitOptions
from taskmaster.engine.listing import JobFilter as EngineFilter
from taskmaster.errors import InvalidArgumentError

InputType = TypeVar("InputType", bound=type)


def built_from_plan(cls: InputType) -> InputType:
    """Build this input from its fields' types resolved once, not on every request.

    Strawberry's default conversion resolves every field's type and GraphQL name each time
    (24 conversions per SubmitJobInput, a fifth of a submitJob request's CPU). Its
    `from_input` hook lets a type build itself: scalars are taken as graphql-core parsed
    them, as Strawberry would; anything else still goes through Strawberry's converter.
    """
    definition = get_object_definition(cls, strict=True)
    plan: list[tuple[str, str, Any, bool]] = []

    def build(target: Callable[..., Any], value: Mapping[str, Any],
              context: InputContext) -> Any:
        if not plan:
            for field in definition.fields:
                type_ = field.resolve_type(type_definition=definition)
                inner = type_.of_type if isinstance(type_, StrawberryOptional) else type_
                plan.append((context.config.name_converter.from_field(field),
                             field.python_name, type_,
                             is_scalar(inner, context.scalar_registry)))
        kwargs = {}
        for graphql_name, python_name, type_, plain in plan:
            if graphql_name in value:
                given = value[graphql_name]
                kwargs[python_name] = given if plain or given is None \
                    else context.convert(given, type_, graphql_name)
        return target(**kwargs)

    definition.from_input = build
    return cls


@built_from_plan
@strawberry.input(description="What to run, with what, and how.")
class SubmitJobInput:
    function: str
    payload: JSON | None = None
    priority: Priority | None = None  # type: ignore[valid-type]
    queue: str | None = strawberry.field(default=None,
                                         description="Overrides the function's queue.")
    delay_seconds: float | None = strawberry.field(
        default=None, description="Start no sooner than this many seconds from now.")
    run_at: datetime | None = strawberry.field(
        default=None, description="Start no sooner than this time (with a time zone).")
    max_attempts: int | None = strawberry.field(
        default=None, description="Attempts in total, the first included (function default).")
    timeout_seconds: float | None = None
    retry_base_seconds: float | None = strawberry.field(
        default=None, description="The n-th retry waits base * 2^(n-1) seconds...")
    retry_max_seconds: float | None = strawberry.field(
        default=None, description="...capped at this.")
    retry_jitter: bool | None = strawberry.field(
        default=None, description="Spread each retry delay within [d/2, d].")
    idempotency_key: str | None = strawberry.field(
        default=None, description="Submitting the same key again (in the same queue) returns"
        " the existing job and enqueues nothing.")

    def options(self) -> SubmitOptions:
        return submit_options(self)


_GraphQLInt = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]


class PlainSubmitJobInput(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """SubmitJobInput as msgspec decodes it from variables (see api/prepared.py): only
    values graphql-core would accept as they are; anything else fails to decode and is
    left to the normal path."""

    function: str
    payload: Any = None
    priority: Priority | None = None  # type: ignore[valid-type]
    queue: str | None = None
    delay_seconds: float | None = None
    run_at: None = None
    """A time needs the DateTime scalar's parsing: such inputs take the normal path."""
    max_attempts: _GraphQLInt | None = None
    timeout_seconds: float | None = None
    retry_base_seconds: float | None = None
    retry_max_seconds: float | None = None
    retry_jitter: bool | None = None
    idempotency_key: str | None = None

    def options(self) -> SubmitOptions:
        return submit_options(self)


def submit_options(given: SubmitJobInput | PlainSubmitJobInput) -> SubmitOptions:
    run_at_ms = None
    if given.run_at is not None:
        if given.run_at.tzinfo is None:
            raise InvalidArgumentError("runAt", "needs a time zone, e.g. 2030-01-01T00:00Z")
        run_at_ms = int(given.run_at.timestamp() * 1000)
    return SubmitOptions(
        priority=given.priority, queue=given.queue, delay_s=given.delay_seconds,
        run_at_ms=run_at_ms, max_attempts=given.max_attempts,
        timeout_s=given.timeout_seconds, retry_base_s=given.retry_base_seconds,
        retry_max_s=given.retry_max_seconds, retry_jitter=given.retry_jitter,
        idempotency_key=given.idempotency_key)


@built_from_plan
@strawberry.input(description="Every given field must match.")
class JobFilter:
    status: JobStatus | None = None  # type: ignore[valid-type]
    queue: str | None = None
    function: str | None = None
    version: str | None = None
    priority: Priority | None = None  # type: ignore[valid-type]

    def engine(self) -> EngineFilter:
        return EngineFilter(status=self.status, queue=self.queue, function=self.function,
                            version=self.version, priority=self.priority)


@built_from_plan
@strawberry.input(description="Every given field must match.")
class DeadLetterFilter:
    queue: str | None = None
    function: str | None = None
    error_contains: str | None = strawberry.field(
        default=None, description="A case-insensitive part of the last error.")

    def engine(self) -> EngineFilter:
        return EngineFilter(queue=self.queue, function=self.function,
                            error_contains=self.error_contains)
