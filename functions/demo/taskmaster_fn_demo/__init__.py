"""Demo functions: echo a message, sleep with progress, fail on purpose."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from taskmaster import Context, Function, NonRetryableError, hookimpl


@dataclass(frozen=True, kw_only=True)
class Echo:
    message: str


@dataclass(frozen=True, kw_only=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Fail:
    message: str = "demo failure"
    retryable: bool = True


async def noop(ctx: Context, data: dict[str, object]) -> None:
    """Do nothing (the benchmark's job)."""


async def echo(ctx: Context, data: Echo) -> dict[str, str]:
    """Return the message it was given."""
    return {"message": data.message}


async def sleep(ctx: Context, data: Sleep) -> dict[str, float]:
    """Sleep for the given seconds, reporting progress ten times."""
    if not 0 <= data.seconds <= 3600:
        raise NonRetryableError(f"seconds must be within 0..3600, got {data.seconds}")
    for step in range(1, 11):
        await asyncio.sleep(data.seconds / 10)
        ctx.progress(step / 10, f"{step * 10}%" if step in (5, 10) else None)
    return {"slept": data.seconds}


def fail(ctx: Context, data: Fail) -> None:
    """Raise an error; with retryable=false the job fails without further attempts."""
    if data.retryable:
        raise RuntimeError(data.message)
    raise NonRetryableError(data.message)


@hookimpl
def taskmaster_functions() -> list[Function]:
    return [
        Function("demo.echo", echo, input=Echo),
        Function("demo.noop", noop),
        Function("demo.sleep", sleep, input=Sleep, timeout_s=3700),
        Function("demo.fail", fail, input=Fail, max_attempts=3, retry_base_s=0.5),
    ]
