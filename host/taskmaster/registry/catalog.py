"""Catalog: the live set of function plugins of one process, reloadable per distribution.

Drain, then reload (DESIGN §5): for each distribution whose fingerprint changed, its job
types stop starting new executions (DRAINING), running ones finish (the worker's drain
callback bounds that), the new version is imported and initialised (LOADING) while the old
one's objects stay alive, and only then is the old one shut down. A new version that fails
is rejected and the old one keeps serving. Unchanged functions never pause.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

from taskmaster.errors import UnknownFunctionError
from taskmaster.function import Function
from taskmaster.registry.discovery import Discovered, discover
from taskmaster.registry.plugins import LoadedPlugin, conflict_error, evict_modules, load_plugin

logger = logging.getLogger(__name__)

Drain = Callable[[set[str]], Awaitable[None]]
"""Waits until no execution of these job types runs in this process any more."""
Resumed = Callable[[set[str]], Awaitable[None]]


class FunctionState(enum.Enum):
    ACTIVE = "ACTIVE"
    DRAINING = "DRAINING"
    LOADING = "LOADING"
    FAILED = "FAILED"


@dataclass(frozen=True)
class CatalogEntry:
    function: Function
    plugin: str
    version: str


@dataclass
class ReloadOutcome:
    loaded: list[str] = field(default_factory=list)
    """`name version` of each distribution (re)loaded."""
    unloaded: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)


class Catalog:
    """The functions this process serves; `initialise` runs plugin lifecycle hooks."""

    def __init__(self, plugins: Iterable[LoadedPlugin] = (), *, initialise: bool = False) -> None:
        self.initialise = initialise
        self._plugins: dict[str, LoadedPlugin] = {canonicalize_name(p.name): p for p in plugins}
        self._entries: dict[str, CatalogEntry] = {}
        self._states: dict[str, FunctionState] = {}
        self.rejected: dict[str, str] = {}
        """Plugin → why its newest version was refused (while an older one may serve)."""
        self._rejected_fingerprints: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._rebuild()

    @property
    def plugins(self) -> list[LoadedPlugin]:
        return sorted(self._plugins.values(), key=lambda p: canonicalize_name(p.name))

    # -- lookups --
    def get(self, name: str) -> CatalogEntry:
        """The entry for a job type that is loaded (ACTIVE, or paused for a reload)."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownFunctionError(name, list(self._entries)) from None

    def runnable(self, name: str) -> CatalogEntry | None:
        """The entry if executions of this job type may start now; None to make them wait."""
        if self._states.get(name) != FunctionState.ACTIVE:
            return None
        return self._entries.get(name)

    def active_functions(self) -> set[str]:
        return {name for name, state in self._states.items() if state == FunctionState.ACTIVE}

    def state(self, name: str) -> FunctionState:
        return self._states.get(name, FunctionState.FAILED)

    def entries(self) -> list[CatalogEntry]:
        return [self._entries[name] for name in sorted(self._entries)]

    def resources_of(self, plugin_name: str) -> dict[str, object]:
        plugin = self._plugins.get(plugin_name) or self._plugins.get(
            canonicalize_name(plugin_name))
        return plugin.resources if plugin else {}

    def queues(self) -> set[str]:
        return {entry.function.queue for entry in self._entries.values()}

    def versions(self) -> dict[str, str]:
        return {p.name: p.version for p in self.plugins if p.ok}

    def fingerprints(self) -> dict[str, str]:
        return {p.name: p.fingerprint for p in self.plugins if p.ok}

    def load_error(self, plugin_name: str) -> str | None:
        plugin = self._plugins.get(canonicalize_name(plugin_name))
        return self.rejected.get(canonicalize_name(plugin_name)) or (
            plugin.error if plugin else None)

    # -- lifecycle --
    async def start(self) -> None:
        """Run every plugin's on_init (worker processes); failed plugins stop serving."""
        if self.initialise:
            for plugin in self.plugins:
                await plugin.on_init()
        self._rebuild()

    async def stop(self) -> None:
        if self.initialise:
            for plugin in self.plugins:
                await plugin.on_shutdown()

    async def sync(self, drain: Drain | None = None, resumed: Resumed | None = None,
                   installed: list[Discovered] | None = None, *,
                   retry_rejected: bool = False) -> ReloadOutcome:
        """Bring the loaded plugins in line with what is installed now.

        A version that was rejected is not tried again on every scan, only when asked
        (`retry_rejected`, an explicit reload) or when it changes again.
        """
        async with self._lock:
            if retry_rejected:
                self._rejected_fingerprints.clear()
            found = {d.key: d for d in (installed if installed is not None else discover())}
            outcome = ReloadOutcome()
            changed, added = self.pending(found)
            if not changed and not added:
                return outcome
            paused = {f.name for key in changed for f in self._plugins[key].functions}
            for name in paused:
                self._states[name] = FunctionState.DRAINING
            if drain is not None and paused:
                await drain(paused)
            for key in changed:
                await self._replace(key, found.get(key), outcome)
            for key in added:
                await self._replace(key, found[key], outcome)
            self._rebuild()
            if resumed is not None:
                await resumed({name for name, state in self._states.items()
                               if state == FunctionState.ACTIVE})
            logger.info("functions reloaded: loaded %s, unloaded %s, rejected %s",
                        outcome.loaded or "-", outcome.unloaded or "-",
                        list(outcome.rejected) or "-")
            return outcome

    def pending(self, found: dict[str, Discovered]) -> tuple[list[str], list[str]]:
        """(loaded plugins to replace or unload, new plugins to load) to match `found`;
        a version rejected before does not count until it changes again."""
        def new(key: str) -> bool:
            return self._rejected_fingerprints.get(key) != found[key].fingerprint

        changed = [key for key, plugin in self._plugins.items() if key not in found
                   or (found[key].fingerprint != plugin.fingerprint and new(key))]
        added = [key for key in found if key not in self._plugins and new(key)]
        return changed, added

    async def _replace(self, key: str, found: Discovered | None, outcome: ReloadOutcome) -> None:
        old = self._plugins.get(key)
        if found is None:
            assert old is not None
            if self.initialise:
                await old.on_shutdown()
            evict_modules(old.modules)
            del self._plugins[key]
            self.rejected.pop(key, None)
            outcome.unloaded.append(f"{old.name} {old.version}")
            return
        for function in old.functions if old else ():
            self._states[function.name] = FunctionState.LOADING
        new = await self._load(found, old)
        if not new.ok:
            assert new.error is not None
            self._rejected_fingerprints[key] = found.fingerprint
            if old is not None and old.ok:
                self.rejected[key] = f"{found.name} {found.version} rejected; {old.version}" \
                                     f" keeps serving: {new.error}"
                outcome.rejected[found.name] = new.error
                return
            self._plugins[key] = new  # nothing older to keep: record the failure
            outcome.rejected[found.name] = new.error
            return
        if old is not None and self.initialise:
            await old.on_shutdown()
        self._plugins[key] = new
        self.rejected.pop(key, None)
        self._rejected_fingerprints.pop(key, None)
        outcome.loaded.append(f"{new.name} {new.version}")

    async def _load(self, found: Discovered, old: LoadedPlugin | None) -> LoadedPlugin:
        """Import and initialise a new version beside the old one's live objects."""
        saved = evict_modules(old.modules | found.modules) if old else {}
        new = LoadedPlugin(found.name, found.version, found.modules, found.fingerprint)
        if found.editable and old is not None:
            new.reject("installed in editable mode (pip install -e): its code cannot be"
                       " reloaded in a running process; install it normally"
                       " (pip install <path>) or restart the host")
        else:
            new = load_plugin(found)
        if new.ok:
            others = {f.name: p.name for k, p in self._plugins.items() if k != found.key
                      for f in p.functions}
            clash = next((f.name for f in new.functions if f.name in others), None)
            if clash is not None:
                new.reject(conflict_error(clash, others[clash], new.name).message)
        if new.ok and self.initialise:
            await new.on_init()
        if not new.ok:
            evict_modules(found.modules | new.modules)
            sys.modules.update(saved)  # the old version's modules, as they were
        return new

    def _rebuild(self) -> None:
        self._entries, self._states = {}, {}
        for plugin in self.plugins:
            clash = next((f.name for f in plugin.functions if f.name in self._entries), None)
            if clash is not None:
                # The first plugin by name keeps the job type; the later one is rejected
                # whole, so one job type never has two possible handlers.
                plugin.reject(conflict_error(clash, self._entries[clash].plugin,
                                             plugin.name).message)
                continue
            for function in plugin.functions:
                self._entries[function.name] = CatalogEntry(function, plugin.name,
                                                            plugin.version)
                self._states[function.name] = FunctionState.ACTIVE


def load_catalog(*, initialise: bool = False) -> Catalog:
    """Discover and import every installed function distribution."""
    return Catalog((load_plugin(found) for found in discover()), initialise=initialise)
