"""Test plugin for fault tests: a job that kills its worker, and one that reports its pid."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from taskmaster import Context, Function, hookimpl


async def die(ctx: Context, data: dict[str, object]) -> None:
    """Kill the worker process running it, as an out-of-memory kill would."""
    os.kill(os.getpid(), signal.SIGKILL)


async def pid(ctx: Context, data: dict[str, float]) -> dict[str, int]:
    """Note the start in a ledger file, sleep, and return the pid that finished."""
    ledger = os.environ.get("TM_CHAOS_LEDGER")
    if ledger:
        with Path(ledger).open("a") as out:
            out.write(f"start {ctx.job_id} {ctx.attempt} {os.getpid()}\n")
    await asyncio.sleep(float(data.get("seconds", 1.0)))
    return {"pid": os.getpid(), "attempt": ctx.attempt}


@hookimpl
def taskmaster_functions() -> list[Function]:
    return [Function("chaos.die", die, max_attempts=5),
            Function("chaos.pid", pid, max_attempts=5)]
