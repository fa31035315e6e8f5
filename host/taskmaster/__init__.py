"""TaskMaster: the SDK for function authors.

```python
from taskmaster import Context, Function, hookimpl

async def send(ctx: Context, data: SendEmail) -> dict[str, str]: ...

@hookimpl
def taskmaster_functions() -> list[Function]:
    return [Function("email.send", send, input=SendEmail, queue="email")]
```
"""

from importlib.metadata import PackageNotFoundError, version

from taskmaster.context import Context, PluginContext
from taskmaster.errors import NonRetryableError, TaskmasterError
from taskmaster.function import Function, Priority
from taskmaster.hookspecs import hookimpl

try:
    __version__ = version("taskmaster")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Context",
    "Function",
    "NonRetryableError",
    "PluginContext",
    "Priority",
    "TaskmasterError",
    "__version__",
    "hookimpl",
]
