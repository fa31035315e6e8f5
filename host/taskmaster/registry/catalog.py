"""Catalog: job type → the function that serves it and the plugin version it came from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from taskmaster.errors import UnknownFunctionError
from taskmaster.function import Function
from taskmaster.registry.discovery import discover
from taskmaster.registry.plugins import LoadedPlugin, conflict_error, load_plugin


@dataclass(frozen=True)
class CatalogEntry:
    function: Function
    plugin: str
    version: str


class Catalog:
    """The functions this process serves, built from loaded plugins."""

    def __init__(self, plugins: Iterable[LoadedPlugin]) -> None:
        self.plugins = sorted(plugins, key=lambda p: p.name.lower())
        self._entries: dict[str, CatalogEntry] = {}
        self._rebuild()

    def _rebuild(self) -> None:
        self._entries.clear()
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

    async def start(self) -> None:
        """Run every plugin's on_init (worker processes); failed plugins stop serving."""
        for plugin in self.plugins:
            await plugin.on_init()
        self._rebuild()

    async def stop(self) -> None:
        for plugin in self.plugins:
            await plugin.on_shutdown()

    def get(self, name: str) -> CatalogEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownFunctionError(name, list(self._entries)) from None

    def entries(self) -> list[CatalogEntry]:
        return [self._entries[name] for name in sorted(self._entries)]

    def resources_of(self, plugin_name: str) -> dict[str, object]:
        return next(p.resources for p in self.plugins if p.name == plugin_name)

    def queues(self) -> set[str]:
        return {entry.function.queue for entry in self._entries.values()}

    def versions(self) -> dict[str, str]:
        return {p.name: p.version for p in self.plugins if p.ok}


def load_catalog() -> Catalog:
    """Discover and import every installed function distribution."""
    return Catalog(load_plugin(found) for found in discover())
