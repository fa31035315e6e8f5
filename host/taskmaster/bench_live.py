"""The bench's scenarios that need running processes around a live change: many
WebSocket subscribers while jobs flow (6), and a hot swap under load (7)."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import connect

from taskmaster.engine.jobs import JobClient, JobStatus, SubmitOptions
from taskmaster.function import Function
from taskmaster.loadgen import percentile, wait_for_port
from taskmaster.registry.live import broadcast_reload
from taskmaster.store.embedded import free_port

if TYPE_CHECKING:
    from taskmaster.bench import Bench

QUEUE = "bench"
UPDATES = "subscription($id: ID!) { jobUpdates(id: $id) { status completedAt } }"


async def _subscriber(url: str, job_id: str, ready: asyncio.Event, opened: list[int],
                      delays_ms: list[float], deadline: float) -> None:
    async with connect(url, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                       open_timeout=60, ping_interval=None) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        await ws.recv()
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": UPDATES, "variables": {"id": job_id}}}))
        await ws.recv()  # the job as it is now
        opened.append(1)
        await ready.wait()
        while time.monotonic() < deadline:
            message = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            if message.get("type") != "next":
                return
            job = message["payload"]["data"]["jobUpdates"]
            if job["status"] == "COMPLETE":
                completed = datetime.fromisoformat(job["completedAt"]).timestamp()
                delays_ms.append((time.time() - completed) * 1000)
                return


async def subscribers(bench: Bench, jobs: JobClient, function: Function, plugin: str,
                      version: str, count: int) -> None:
    """`count` WebSocket clients, each following one job until it completes, while the
    jobs run at about 200 per second; delivery = completion to the update's arrival."""
    port = free_port()
    bench.start_api(port)
    bench.start_taskmaster_worker()
    await wait_for_port(port)
    opening_s = 2.0 + count / 150
    spread_s = count / 200
    views = []
    for start in range(0, count, 1000):
        views += await jobs.submit_many([
            (function, plugin, version, {}, SubmitOptions(
                queue=QUEUE, delay_s=opening_s + random.uniform(0, spread_s)))  # noqa: S311
            for _ in range(min(1000, count - start))])
    ready = asyncio.Event()
    opened: list[int] = []
    delays: list[float] = []
    deadline = time.monotonic() + opening_s + spread_s + 30
    clients = [asyncio.create_task(_subscriber(f"ws://127.0.0.1:{port}/graphql", v.id, ready,
                                               opened, delays, deadline)) for v in views]
    ready.set()
    results = await asyncio.gather(*clients, return_exceptions=True)
    bench.stop_workers()
    errors = [r for r in results if isinstance(r, BaseException)]
    delays.sort()
    bench.figure(f"{count} jobUpdates subscribers: delivery p99", "ms", False).add(
        "tm", percentile([int(d) for d in delays], 0.99))
    bench.figure(f"{count} jobUpdates subscribers: updates missed", "jobs", False).add(
        "tm", float(count - len(delays)))
    if errors:
        print(f"bench: {len(errors)} subscriber(s) failed, first: {errors[0]!r}",
              file=sys.stderr)


PLUGIN = "taskmaster-bench-plugin"
_PLUGIN_MODULE = '''
import asyncio
import time
from taskmaster import Function, hookimpl

async def swap(ctx, data):
    await asyncio.sleep(0.02)
    return {{"version": "{version}"}}

async def clock(ctx, data):
    return {{"t": time.time()}}

async def work(ctx, data):
    total = 0
    for i in range({work_steps}):
        total += i * i

@hookimpl
def taskmaster_functions():
    return [Function("bench.swap", swap, max_attempts=1),
            Function("bench.clock", clock, max_attempts=1),
            Function("bench.work", work, max_attempts=1)]
'''
WORK_STEPS = 10_000
"""The CPU-bound job: a Python loop of this many steps, holding the event loop (under
a millisecond here), the same in both engines' workers."""
SWAP = Function("bench.swap", lambda ctx, data: None, max_attempts=1)
CLOCK = Function("bench.clock", lambda ctx, data: None, max_attempts=1)
WORK = Function("bench.work", lambda ctx, data: None, max_attempts=1)
"""As the bench submits them; the workers run the installed plugin's code."""


def install_bench_plugin(site: Path, version: str) -> None:
    """The bench's own function plugin, as a minimal installed distribution (module +
    dist-info) written in place of the previous version, as pip would leave it."""
    for old in site.glob("taskmaster_bench_plugin-*.dist-info"):
        shutil.rmtree(old)
    (site / "taskmaster_bench_plugin.py").write_text(
        _PLUGIN_MODULE.format(version=version, work_steps=WORK_STEPS))
    info = site / f"taskmaster_bench_plugin-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {PLUGIN}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[taskmaster.functions]\nbench = taskmaster_bench_plugin\n")
    (info / "RECORD").write_text(
        f"taskmaster_bench_plugin.py,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n"
        f"{info.name}/entry_points.txt,,\n")


async def hot_swap(bench: Bench, jobs: JobClient, rate: int, seconds: float) -> None:
    """The bench plugin swapped from 1.0.0 to 2.0.0 while `rate` jobs/s of it flow."""
    install_bench_plugin(bench.plugin_site, "1.0.0")
    bench.start_taskmaster_worker()
    total = int(rate * seconds)
    submitted: list[str] = []
    await asyncio.sleep(3.0)  # the worker starts
    started = time.perf_counter()
    swapped = False
    for i in range(total):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        view = await jobs.submit(SWAP, PLUGIN, "1.0.0", {}, SubmitOptions(queue=QUEUE))
        submitted.append(view.id)
        if not swapped and i >= total // 3:
            install_bench_plugin(bench.plugin_site, "2.0.0")
            await broadcast_reload(jobs.redis, "bench: hot swap")
            swapped = True
    records = await _wait_finished(jobs, submitted, 60)
    bench.stop_workers()
    done = [r for r in records if r is not None and r.status == JobStatus.COMPLETE]
    failed = [r for r in records if r is not None and r.status == JobStatus.FAILED]
    old = [r.started_at_ms for r in done if r.version == "1.0.0" and r.started_at_ms]
    new = [r.started_at_ms for r in done if r.version == "2.0.0" and r.started_at_ms]
    pause = (min(new) - max(old)) / 1000 if old and new else float("inf")
    bench.figure(f"hot swap at {rate} jobs/s: pause of the function", "s", False).add(
        "tm", pause)
    bench.figure(f"hot swap at {rate} jobs/s: lost jobs", "jobs", False).add(
        "tm", float(len(submitted) - len(done) - len(failed)))
    bench.figure(f"hot swap at {rate} jobs/s: failed jobs", "jobs", False).add(
        "tm", float(len(failed)))


async def _wait_finished(jobs: JobClient, ids: list[str], timeout_s: float) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        views = []
        for start in range(0, len(ids), 500):
            queue = ids[0].split(":", 1)[0]
            views += await jobs.views(queue, [i.split(":", 1)[1] for i in ids[start:start + 500]])
        pending = [v for v in views if v is None or v.status not in (
            JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.CANCELLED)]
        if not pending or time.monotonic() > deadline:
            return views
        await asyncio.sleep(0.5)
