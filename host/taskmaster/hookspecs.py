"""The plugin contract: every hook a function package may implement.

A function package declares an entry point in the group `taskmaster.functions` whose
target (a module or object) carries implementations marked with `@taskmaster.hookimpl`.
The host reads the plugin's name and version from its distribution metadata.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

import pluggy

from taskmaster.context import PluginContext
from taskmaster.function import Function

PROJECT = "taskmaster"
ENTRY_POINT_GROUP = "taskmaster.functions"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- declaration ---
@hookspec
def taskmaster_functions() -> Sequence[Function]:  # type: ignore[empty-body]
    """Declare the job types this plugin handles.

    Called in every process each time the plugin is (re)loaded. A job type that another
    installed plugin also declares is a load error naming both distributions, not an
    override.
    """


# --- lifecycle ---
@hookspec
def taskmaster_on_init(ctx: PluginContext) -> Awaitable[None] | None:
    """Open the plugin's shared resources before its first job (worker processes only).

    Store them in `ctx.resources`; handlers see them as `Context.resources`. May be a
    coroutine function. Raising rejects this plugin: its job types are not served and the
    error is reported by `functions` in the API and `taskmaster functions list`.
    """


@hookspec
def taskmaster_on_shutdown(ctx: PluginContext) -> Awaitable[None] | None:
    """Close what `taskmaster_on_init` opened, after the plugin's last job in this process.

    Called once per worker process on graceful shutdown. Errors are logged, not raised.
    """
