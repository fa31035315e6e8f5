"""LeaseKeeper: renews the leases of running jobs from a thread of its own.

A thread, not a task: a handler that blocks the event loop must not make its own job
look abandoned. Leases this worker lost (its job was handed to another worker after a
pause) are reported back to the event loop so the stale attempt is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import redis

from taskmaster.engine.keys import QueueKeys
from taskmaster.engine.scripts import _PRELUDE, HEARTBEAT

logger = logging.getLogger(__name__)

LostLease = Callable[[str, str], None]
"""Called in the event loop with (queue, job key) when a lease was taken away."""


class LeaseKeeper:
    def __init__(self, redis_url: str, lease_s: float, on_lost: LostLease) -> None:
        self.lease_ms = int(lease_s * 1000)
        self.interval_s = lease_s / 3
        self._client = redis.Redis.from_url(redis_url, socket_timeout=max(lease_s, 1.0))
        self._script = self._client.register_script(_PRELUDE + HEARTBEAT)
        self._held: dict[str, dict[str, str]] = {}
        """Queue → job key → token. No lock: the event loop only sets and pops single
        entries, and the thread copies dicts with dict(), which runs no Python code and so
        cannot be interrupted by the loop's thread."""
        self._stop = threading.Event()
        self._on_lost = on_lost
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def hold(self, queue: str, key: str, token: str) -> None:
        held = self._held.get(queue)
        if held is None:
            held = self._held[queue] = {}
        held[key] = token

    def release(self, queue: str, key: str) -> None:
        held = self._held.get(queue)
        if held is not None:
            held.pop(key, None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval_s + 5)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for queue, live in dict(self._held).items():
                jobs = dict(live)
                if not jobs:
                    continue
                try:
                    self._renew(queue, jobs)
                except redis.RedisError as exc:
                    logger.warning("could not renew leases of queue %s: %s", queue, exc)
                except Exception:  # the thread must go on renewing whatever happens
                    logger.exception("renewing the leases of queue %s failed", queue)

    def _renew(self, queue: str, jobs: dict[str, str]) -> None:
        keys = QueueKeys(queue)
        args: list[str | int] = [self.lease_ms]
        for key, token in jobs.items():
            args += [key, token]
        lost = self._script(keys=[keys.active, keys.lease], args=args)
        for key in lost or []:
            name = key.decode()
            if self._held.get(queue, {}).get(name) != jobs[name]:
                continue  # finished meanwhile: not lost, just done
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_lost, queue, name)
