"""Find installed distributions that declare entry points in `taskmaster.functions`."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as stdlib_metadata
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

import importlib_metadata
from packaging.utils import canonicalize_name

from taskmaster.hookspecs import ENTRY_POINT_GROUP


@dataclass(frozen=True)
class Discovered:
    """One function distribution as installed right now."""

    name: str
    version: str
    entry_points: tuple[importlib_metadata.EntryPoint, ...]
    modules: frozenset[str]
    """Module names the distribution owns, from its RECORD (to unload exactly those)."""
    fingerprint: str
    """Version plus a hash of RECORD: a reinstall of the same version with new code differs."""
    editable: bool

    @property
    def key(self) -> str:
        return canonicalize_name(self.name)


def refresh_caches() -> None:
    """Forget cached directory listings so a just-installed package is seen."""
    importlib.invalidate_caches()
    # The stdlib metadata finder keeps its own cache that invalidate_caches() misses on
    # 3.11/3.12 (and is defined without @classmethod there, hence the instance).
    stdlib_metadata.MetadataPathFinder().invalidate_caches()


def discover() -> list[Discovered]:
    """Every installed function distribution, sorted by name.

    The first sys.path entry holding a distribution wins, as for imports. Within one
    entry, the most recently installed metadata wins: `pip install --target --upgrade`
    replaces the package's files but leaves the old version's .dist-info beside the new.
    """
    refresh_caches()
    found: dict[str, Discovered] = {}
    for dist in _newest_first_per_entry(importlib_metadata.distributions()):
        eps = tuple(ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP)
        name = dist.metadata["Name"]
        if not eps or not name or canonicalize_name(name) in found:
            continue
        record = dist.read_text("RECORD") or ""
        modules = set(_owned_modules(dist.files)) | {ep.module.split(".")[0] for ep in eps}
        found[canonicalize_name(name)] = Discovered(
            name, dist.version, eps, frozenset(modules),
            f"{dist.version}+{hashlib.sha256(record.encode()).hexdigest()[:12]}",
            _is_editable(dist.read_text("direct_url.json")))
    return sorted(found.values(), key=lambda d: d.key)


def _newest_first_per_entry(dists: Iterable[importlib_metadata.IDistribution]
                            ) -> list[importlib_metadata.IDistribution]:
    """Keep sys.path order between entries; newest metadata first within an entry."""
    entries: dict[str, list[tuple[float, int, importlib_metadata.IDistribution]]] = {}
    for position, dist in enumerate(dists):
        meta = getattr(dist, "_path", None)  # PathDistribution's .dist-info directory
        root = str(meta.parent) if meta is not None else f"?{position}"
        try:
            mtime = meta.stat().st_mtime if meta is not None else 0.0
        except OSError:
            mtime = 0.0
        entries.setdefault(root, []).append((-mtime, position, dist))
    return [dist for group in entries.values() for _, _, dist in sorted(group,
                                                                        key=lambda t: t[:2])]


def _is_editable(direct_url: str | None) -> bool:
    try:
        return bool(json.loads(direct_url or "{}").get("dir_info", {}).get("editable"))
    except ValueError:
        return False


def _owned_modules(files: Iterable[importlib_metadata.IPackagePath] | None) -> list[str]:
    names = []
    for item in files or ():
        path = PurePosixPath(str(item))
        top = path.parts[0]
        if path.suffix != ".py" or top in ("..", "bin") or top.endswith((".dist-info", ".data")):
            continue
        parts = list(path.parts[:-1])
        if path.name != "__init__.py":
            parts.append(path.stem)
        names.append(".".join(parts))
    return names
