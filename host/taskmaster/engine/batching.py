"""ScriptBatcher: sends the script calls that many job slots make at once in one pipeline.

A worker running 100 short jobs would otherwise pay one socket write and one reply
read per call. Calls issued in the same event-loop turn go out together; each keeps
its own atomicity (it is still one script), only the transport is shared.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_Call = tuple[AsyncScript, list[Any], list[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[_Call] = []
        self._flushing: asyncio.Task[None] | None = None

    async def call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((script, keys, args, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the other slots of this turn join the batch
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for script, keys, args, _ in batch:
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    results = await pipe.execute(raise_on_error=False)
            except Exception as exc:  # the connection failed: every caller learns it
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (script, keys, args, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, NoScriptError):  # the store lost its script cache
                    try:
                        future.set_result(await script(keys=keys, args=args))
                    except Exception as exc:
                        future.set_exception(exc)
                elif isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
