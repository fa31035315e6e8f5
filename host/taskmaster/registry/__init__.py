"""Function packages: discovery, loading, the job-type catalog."""

from taskmaster.registry.catalog import Catalog, CatalogEntry, load_catalog
from taskmaster.registry.plugins import LoadedPlugin

__all__ = ["Catalog", "CatalogEntry", "LoadedPlugin", "load_catalog"]
