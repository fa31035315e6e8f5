"""Test plugin that claims demo.echo, which taskmaster-fn-demo already declares."""

from taskmaster import Context, Function, hookimpl


async def echo(ctx: Context, data: dict[str, object]) -> dict[str, object]:
    return {"clash": True}


@hookimpl
def taskmaster_functions() -> list[Function]:
    return [Function("demo.echo", echo), Function("clash.other", echo)]
