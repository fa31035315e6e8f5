"""Function: what a plugin declares for one job type (handler, typed input, defaults)."""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import msgspec

from taskmaster.errors import InvalidArgumentError, InvalidPayloadError

if TYPE_CHECKING:
    from taskmaster.context import Context

FUNCTION_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
"""Job types are `area.verb`, lower case: `email.send`, `report.render`."""
QUEUE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
"""Queue names end up inside Redis keys: no `:`, `{`, `}`, spaces or wildcards."""

Handler = Callable[["Context", Any], Awaitable[Any] | Any]


class Priority(enum.Enum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    NORMAL = "NORMAL"
    LOW = "LOW"


def check_queue_name(name: str) -> str:
    if not QUEUE_NAME.fullmatch(name):
        raise InvalidArgumentError(
            "queue", f"{name!r} must match {QUEUE_NAME.pattern} (lower case, no ':' or braces)"
        )
    return name


@dataclass(frozen=True)
class Function:
    """One job type: `Function("email.send", send, input=SendEmail, queue="email")`.

    The handler is called as `handler(ctx, data)` where `data` is the submitted payload
    converted to `input` (a dataclass, msgspec Struct or TypedDict); without `input` it
    gets the payload as a JSON object. Sync handlers run in a worker thread.
    """

    name: str
    handler: Handler
    _: KW_ONLY
    input: type[Any] | None = None
    queue: str = "default"
    priority: Priority = Priority.NORMAL
    max_attempts: int = 5
    """Attempts in total, the first one included."""
    timeout_s: float = 300.0
    retry_base_s: float = 1.0
    """The n-th retry waits retry_base_s * 2**(n-1), capped at retry_max_s."""
    retry_max_s: float = 300.0
    retry_jitter: bool = False
    """Spread retries: each delay is drawn from [d/2, d]."""
    keep_completed_s: float | None = None
    """How long completed jobs stay queryable (host default: 24 h)."""
    keep_dead_s: float | None = None
    """How long dead-lettered jobs stay (host default: 7 days)."""
    description: str = ""

    def __post_init__(self) -> None:
        if not FUNCTION_NAME.fullmatch(self.name):
            raise ValueError(f"function name {self.name!r} must look like 'area.verb'")
        check_queue_name(self.queue)
        if not callable(self.handler):
            raise TypeError(f"handler of {self.name!r} is not callable")
        if self.max_attempts < 1:
            raise ValueError(f"{self.name}: max_attempts must be at least 1")
        if self.timeout_s <= 0:
            raise ValueError(f"{self.name}: timeout_s must be positive")
        if not self.description:
            doc = inspect.getdoc(self.handler) or ""
            object.__setattr__(self, "description", doc.split("\n\n")[0].strip())

    @cached_property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)

    def input_schema(self) -> dict[str, Any]:
        """JSON Schema of the payload this function accepts."""
        if self.input is None:
            return {"type": "object"}
        schema: dict[str, Any] = msgspec.json.schema(self.input)
        return schema

    def parse_input(self, payload: Any) -> Any:
        """Convert a JSON payload to the declared input type, or raise InvalidPayloadError."""
        if payload is None:
            payload = {}
        if self.input is None:
            if not isinstance(payload, dict):
                raise InvalidPayloadError(self.name, "expected a JSON object", "$")
            return payload
        try:
            data = msgspec.convert(payload, type=self.input, strict=True)
        except msgspec.ValidationError as exc:
            problem, _, where = str(exc).partition(" - at ")
            raise InvalidPayloadError(self.name, problem, where.strip("`") or "$") from None
        unknown = _unknown_fields(self.input, payload)
        if unknown:
            raise InvalidPayloadError(self.name, f"unknown field {unknown[0]!r}", f"$.{unknown[0]}")
        return data


def _unknown_fields(input_type: type[Any], payload: Any) -> list[str]:
    # msgspec ignores extra keys for dataclasses and TypedDicts; a typo in an optional
    # field would then be silently dropped, so reject them ourselves.
    if not isinstance(payload, dict):
        return []
    info = msgspec.inspect.type_info(input_type)
    fields = getattr(info, "fields", None)
    if fields is None:
        return []
    known = {f.encode_name for f in fields}
    return sorted(str(k) for k in payload if k not in known)
