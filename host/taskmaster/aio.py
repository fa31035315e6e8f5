"""The event loop every TaskMaster process runs on."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (uvicorn[standard] brings it), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def freeze_startup_heap() -> None:
    """Exempt what start-up built (modules, the schema, plugins) from garbage collection.

    A burst of jobs allocates enough to trigger full collections, and each would rescan
    those hundreds of thousands of long-lived objects: in a 1,000-job `submitJobs` that
    was ~a fifth of the API's CPU per job.
    """
    gc.freeze()
