"""One loaded function plugin: its own pluggy manager, its functions, its lifecycle."""

from __future__ import annotations

import inspect
import logging
import sys
import traceback
from collections.abc import Awaitable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from taskmaster import hookspecs
from taskmaster.context import PluginContext
from taskmaster.errors import PluginLoadError
from taskmaster.function import Function
from taskmaster.registry.discovery import Discovered

logger = logging.getLogger(__name__)


@dataclass
class LoadedPlugin:
    """A distribution imported into this process (or the error that stopped it)."""

    name: str
    version: str
    modules: frozenset[str]
    fingerprint: str = ""
    functions: tuple[Function, ...] = ()
    error: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    _pm: pluggy.PluginManager | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def reject(self, error: str) -> None:
        """Mark this plugin as not serving; its job types become unknown here."""
        self.error = error
        self.functions = ()
        logger.error("plugin %s %s rejected: %s", self.name, self.version, error,
                     extra={"plugin": self.name, "version": self.version})

    def context(self) -> PluginContext:
        return PluginContext(plugin=self.name, version=self.version,
                             logger=logging.getLogger(f"taskmaster.plugin.{self.name}"),
                             resources=self.resources)

    async def on_init(self) -> None:
        """Run the plugin's on_init; an exception rejects the plugin."""
        if self._pm is None or not self.ok:
            return
        try:
            await _await_all(self._pm.hook.taskmaster_on_init(ctx=self.context()))
        except Exception as exc:
            self.reject(f"on_init failed: {_described(exc)}")

    async def on_shutdown(self) -> None:
        if self._pm is None or not self.ok:
            return
        try:
            await _await_all(self._pm.hook.taskmaster_on_shutdown(ctx=self.context()))
        except Exception:
            logger.exception("on_shutdown of plugin %s failed", self.name,
                             extra={"plugin": self.name, "version": self.version})


def load_plugin(found: Discovered) -> LoadedPlugin:
    """Import a discovered distribution and collect the functions it declares."""
    plugin = LoadedPlugin(found.name, found.version, found.modules, found.fingerprint)
    # One manager per plugin: lifecycle hooks then reach exactly this plugin, and
    # unloading it later leaves no stale registration behind in a shared manager.
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    try:
        for ep in found.entry_points:
            pm.register(ep.load(), name=f"{found.name}:{ep.name}")
        pm.check_pending()
        declared = [f for batch in pm.hook.taskmaster_functions() for f in batch]
    except Exception as exc:
        plugin.reject(_described(exc))
        return plugin
    bad = [f for f in declared if not isinstance(f, Function)]
    if bad:
        plugin.reject(f"taskmaster_functions returned {type(bad[0]).__name__}, not Function")
        return plugin
    names = [f.name for f in declared]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        plugin.reject(f"declares {', '.join(twice)} more than once")
        return plugin
    plugin.functions = tuple(declared)
    plugin._pm = pm
    return plugin


def evict_modules(names: frozenset[str]) -> dict[str, ModuleType]:
    """Remove exactly these modules from sys.modules; return them for a possible restore."""
    return {name: sys.modules.pop(name) for name in sorted(names, reverse=True)
            if name in sys.modules}


def conflict_error(job_type: str, owner: str, other: str) -> PluginLoadError:
    return PluginLoadError(
        f"job type {job_type!r} is declared by both {owner!r} and {other!r};"
        f" uninstall one of them (kept {owner!r})",
        function=job_type, distributions=[owner, other],
    )


def _described(exc: BaseException) -> str:
    """`Type: message`, then the traceback, for loadError."""
    trace = "".join(traceback.format_exception(exc)).rstrip()
    return f"{type(exc).__name__}: {exc}\n{trace}"


async def _await_all(results: list[Awaitable[None] | None]) -> None:
    for result in results:
        if inspect.isawaitable(result):
            await result
