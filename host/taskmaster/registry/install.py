"""Installing and removing function packages in the host's environment, under one lock.

The lock keeps reload scans from reading a half-written environment: installs through
the host hold it exclusively; scans skip a round while it is held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import importlib_metadata
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from taskmaster.errors import InvalidArgumentError, PluginLoadError

PIP_TIMEOUT_S = 600


def lock_path() -> Path:
    return Path(sys.prefix) / ".taskmaster-install.lock"


@contextlib.contextmanager
def install_lock(*, shared: bool = False, wait: bool = True) -> Iterator[bool]:
    """Hold the environment's install lock; yields False if `wait` is off and it is busy."""
    fd = os.open(lock_path(), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def checked_requirement(text: str) -> Requirement:
    """A plain `name[==version]` requirement: no URLs, paths, options or markers."""
    if text.startswith("-") or any(c.isspace() for c in text.strip()):
        raise InvalidArgumentError("requirement", f"{text!r} must be one package name with an"
                                   " optional version, e.g. 'taskmaster-fn-email==1.3.0'")
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise InvalidArgumentError("requirement", str(exc)) from None
    if requirement.url or requirement.marker:
        raise InvalidArgumentError("requirement", "URLs and environment markers are not"
                                   " allowed; name a package from the configured index")
    return requirement


def pip_install(requirements: Sequence[str], *, target: str | None = None,
                index_url: str | None = None, find_links: Sequence[str] = (),
                only_binary: bool = False) -> str:
    """Run pip (argv, no shell) under the install lock; returns its output."""
    argv = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
            "--no-input", "--upgrade"]
    if target:
        argv += ["--target", target]
    if only_binary:
        argv += ["--only-binary", ":all:"]  # no setup.py runs at install time
    if index_url:
        argv += ["--index-url", index_url]
    for link in find_links:
        argv += ["--find-links", link]
    argv += list(requirements)
    return _run(argv)


def pip_remove(name: str, *, target: str | None = None) -> str:
    """Uninstall a distribution (from `target` by its RECORD, as pip cannot)."""
    with install_lock():
        if target is None:
            return _run([sys.executable, "-m", "pip", "uninstall", "-y",
                         "--disable-pip-version-check", name], locked=True)
        for dist in importlib_metadata.distributions(path=[target]):
            if canonicalize_name(dist.metadata["Name"] or "") == canonicalize_name(name):
                label = f"{dist.metadata['Name']} {dist.version}"  # before its files go
                removed = _remove_files(Path(target), dist)
                return f"removed {label} ({removed} files)"
    raise PluginLoadError(f"{name} is not installed in {target}")


def _remove_files(root: Path, dist: importlib_metadata.IDistribution) -> int:
    """Delete the files RECORD lists, then the directories they leave empty."""
    root = root.resolve()
    count = 0
    parents: set[Path] = set()
    for item in dist.files or ():
        path = (root / str(item)).resolve()
        if root in path.parents and path.is_file():
            path.unlink()
            count += 1
            parents.update(p for p in path.parents if root in p.parents)
    for directory in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        shutil.rmtree(directory / "__pycache__", ignore_errors=True)
        with contextlib.suppress(OSError):
            directory.rmdir()  # only if empty
    return count


def _run(argv: list[str], *, locked: bool = False) -> str:
    with install_lock() if not locked else contextlib.nullcontext(True):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                              check=False)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise PluginLoadError(f"pip failed ({done.returncode}): {output[-2000:]}")
    return output
