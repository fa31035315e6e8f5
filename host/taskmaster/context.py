"""The contexts handed to plugin code: Context per job attempt, PluginContext per plugin."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ProgressReporter = Callable[[float | None, str | None], None]


class CancelFlag:
    """Set once an attempt is cancelled; read from the handler's thread without locking
    (one attribute write is atomic, and a threading.Event per job costs more than the job)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@dataclass(frozen=True, kw_only=True)
class PluginContext:
    """Given to `taskmaster_on_init` / `taskmaster_on_shutdown` of one plugin."""

    plugin: str
    version: str
    logger: logging.Logger
    resources: dict[str, Any] = field(default_factory=dict)
    """Put shared clients here in on_init; every job of this plugin sees the same dict."""


@dataclass(frozen=True, kw_only=True)
class Context:
    """Given to a handler with its validated input, once per attempt."""

    job_id: str
    function: str
    attempt: int
    """1 for the first attempt."""
    max_attempts: int
    plugin: str
    version: str
    logger: logging.Logger
    resources: dict[str, Any]
    _report: ProgressReporter = field(repr=False)
    _cancelled: CancelFlag = field(default_factory=CancelFlag, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once this attempt was cancelled or timed out; sync handlers should stop.

        Async handlers are cancelled directly (CancelledError); a sync handler runs in a
        thread that cannot be interrupted, so it is told through this flag instead.
        """
        return self._cancelled.is_set()

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Record how far the job is (0.0 to 1.0); safe to call from sync handlers too."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be within 0..1, got {fraction}")
        self._report(fraction, message)

    def heartbeat(self) -> None:
        """Tell the host this attempt is alive without changing its progress."""
        self._report(None, None)
