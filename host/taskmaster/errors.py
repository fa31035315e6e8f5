"""The whole error tree of TaskMaster; each class carries the code clients see.

```
TaskmasterError            code
├── ConfigError            CONFIG
├── StoreUnavailableError  STORE_UNAVAILABLE
├── ServerUnavailableError SERVER_UNAVAILABLE (clients: the API did not answer)
├── PluginLoadError        PLUGIN_LOAD
├── UnknownFunctionError   UNKNOWN_FUNCTION
├── InvalidPayloadError    INVALID_PAYLOAD
├── InvalidArgumentError   INVALID_ARGUMENT
├── BatchInvalidError      INVALID_BATCH   (submitJobs: per-item errors, nothing stored)
├── JobNotFoundError       NOT_FOUND
├── JobStateError          CONFLICT
├── JobFailedError         JOB_FAILED      (CLI: a job waited for ended unsuccessfully)
├── RemoteError            (the code the server sent)
├── UnauthenticatedError   UNAUTHENTICATED
├── ForbiddenError         FORBIDDEN
└── NonRetryableError      NON_RETRYABLE   (raised by handlers: fail now, no retry)
```
Surfaces translate these once: the GraphQL error extension (api/errors.py) and the CLI
(cli.py). Everything else is an unexpected error and is masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar


class TaskmasterError(Exception):
    """Base of every error TaskMaster reports on purpose."""

    code: ClassVar[str] = "TASKMASTER"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        """Machine-readable facts for clients (GraphQL `extensions`)."""


class ConfigError(TaskmasterError):
    code = "CONFIG"


class StoreUnavailableError(TaskmasterError):
    code = "STORE_UNAVAILABLE"


class ServerUnavailableError(TaskmasterError):
    code = "SERVER_UNAVAILABLE"


class PluginLoadError(TaskmasterError):
    code = "PLUGIN_LOAD"


class UnknownFunctionError(TaskmasterError):
    code = "UNKNOWN_FUNCTION"

    def __init__(self, name: str, loaded: Sequence[str]) -> None:
        super().__init__(
            f"no function named {name!r} is loaded; see 'taskmaster functions list'"
            f" (loaded: {', '.join(sorted(loaded)) or 'none'})",
            function=name,
            loaded=sorted(loaded),
        )


class InvalidPayloadError(TaskmasterError):
    code = "INVALID_PAYLOAD"

    def __init__(self, function: str, problem: str, field: str) -> None:
        super().__init__(
            f"invalid payload for {function!r}: {problem} (at {field})",
            function=function,
            field=field,
        )


class BatchInvalidError(TaskmasterError):
    """Some items of a batch are invalid; `details["errors"]` lists each with its index."""

    code = "INVALID_BATCH"


class InvalidArgumentError(TaskmasterError):
    code = "INVALID_ARGUMENT"

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"invalid {argument}: {problem}", argument=argument)


class JobNotFoundError(TaskmasterError):
    code = "NOT_FOUND"

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"no job with id {job_id!r} (it never existed or its retention period ended)",
            id=job_id,
        )


class JobStateError(TaskmasterError):
    code = "CONFLICT"


class JobFailedError(TaskmasterError):
    code = "JOB_FAILED"


class RemoteError(TaskmasterError):
    """An error the TaskMaster server reported, carrying the server's code."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.code = code  # type: ignore[misc]


class UnauthenticatedError(TaskmasterError):
    code = "UNAUTHENTICATED"


class ForbiddenError(TaskmasterError):
    code = "FORBIDDEN"


class NonRetryableError(TaskmasterError):
    """Raise from a handler to fail the job now, without further attempts."""

    code = "NON_RETRYABLE"
