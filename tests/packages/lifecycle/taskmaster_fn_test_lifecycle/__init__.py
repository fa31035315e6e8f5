"""Test plugin recording its lifecycle hooks to the file named by TM_LIFECYCLE_LOG."""

from __future__ import annotations

import os
from pathlib import Path

from taskmaster import Context, Function, PluginContext, hookimpl


def _record(line: str) -> None:
    log = os.environ.get("TM_LIFECYCLE_LOG")
    if log:
        with Path(log).open("a") as out:
            out.write(f"{line} {os.getpid()}\n")


async def greet(ctx: Context, data: dict[str, object]) -> dict[str, object]:
    return {"greeting": ctx.resources["greeting"], "version": ctx.version,
            "attempt": ctx.attempt}


@hookimpl
def taskmaster_functions() -> list[Function]:
    return [Function("lifecycle.greet", greet, queue="lifecycle")]


@hookimpl
async def taskmaster_on_init(ctx: PluginContext) -> None:
    if os.environ.get("TM_LIFECYCLE_FAIL_INIT"):
        raise RuntimeError("on_init refused on purpose")
    ctx.resources["greeting"] = f"hello from {ctx.plugin} {ctx.version}"
    _record("init")


@hookimpl
def taskmaster_on_shutdown(ctx: PluginContext) -> None:
    _record("shutdown")
