"""Function packages: discovery, loading, the live catalog, drain-then-reload."""

from taskmaster.registry.catalog import (
    Catalog,
    CatalogEntry,
    FunctionState,
    ReloadOutcome,
    load_catalog,
)
from taskmaster.registry.plugins import LoadedPlugin

__all__ = ["Catalog", "CatalogEntry", "FunctionState", "LoadedPlugin", "ReloadOutcome",
           "load_catalog"]
