"""Test plugin whose code says which version it is (1.0.0), for hot-reload tests."""

from __future__ import annotations

import asyncio

from taskmaster import Context, Function, PluginContext, hookimpl

CODE_VERSION = "1.0.0"


async def run(ctx: Context, data: dict[str, float]) -> dict[str, str]:
    await asyncio.sleep(float(data.get("seconds", 0)))
    return {"version": CODE_VERSION, "resource": ctx.resources["opened_by"]}


@hookimpl
def taskmaster_functions() -> list[Function]:
    return [Function("versioned.run", run, max_attempts=2)]


@hookimpl
def taskmaster_on_init(ctx: PluginContext) -> None:
    ctx.resources["opened_by"] = CODE_VERSION
