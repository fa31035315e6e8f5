"""`taskmaster bench`: TaskMaster and raw SAQ doing the same work on the same Valkey.

Each figure is the median of several runs (min to max shown) with its ratio to raw SAQ
measured in the same run. Job timings come from the jobs' own records (start and
completion stamps), so process start-up never counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from saq.queue.redis import RedisQueue

from taskmaster.bench_live import (
    CLOCK,
    PLUGIN,
    QUEUE,
    WORK,
    WORK_STEPS,
    hot_swap,
    install_bench_plugin,
    subscribers,
)
from taskmaster.engine.jobs import JobClient, SubmitOptions
from taskmaster.engine.keys import QueueKeys
from taskmaster.loadgen import percentile, post_load, wait_for_port
from taskmaster.registry import load_catalog
from taskmaster.store.connection import create_redis
from taskmaster.store.embedded import EmbeddedValkey, free_port

STALL_S = 6.0
"""Raw SAQ leaves a few jobs to its sweep (SAQ #124/#277), which finishes them 5 s apart."""
SAQ_QUEUE = "saqbench"
SAQ_WORKER = """
import asyncio, sys, time
import redis.asyncio as aioredis
from saq import Worker
from saq.queue.redis import RedisQueue

async def noop(ctx): return None
async def clock(ctx): return {"t": time.time()}
async def work(ctx):
    total = 0
    for i in range(int(sys.argv[3])):
        total += i * i

async def main():
    queue = RedisQueue(aioredis.from_url(sys.argv[1], max_connections=300), name=sys.argv[2])
    worker = Worker(queue, functions=[("noop", noop), ("clock", clock), ("work", work)],
                    concurrency=100)
    await queue.connect()
    await worker.start()

asyncio.run(main())
"""


@dataclass
class Figure:
    name: str
    unit: str
    higher_is_better: bool = True
    taskmaster: list[float] = field(default_factory=list)
    saq: list[float] = field(default_factory=list)

    def add(self, engine: str, value: float) -> None:
        (self.taskmaster if engine == "tm" else self.saq).append(value)

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float] | None:
            if not values:
                return None
            return {"median": statistics.median(values), "min": min(values),
                    "max": max(values)}

        tm, sq = stats(self.taskmaster), stats(self.saq)
        ratio = None
        if tm and sq and sq["median"] and tm["median"]:
            ratio = tm["median"] / sq["median"] if self.higher_is_better \
                else sq["median"] / tm["median"]
        return {"name": self.name, "unit": self.unit, "taskmaster": tm, "saq": sq,
                "ratio": ratio}


@dataclass
class Bench:
    url: str
    size: int
    runs: int
    latency_s: float
    subscribers: int
    plugin_site: Path
    """Where the bench's own function plugin is installed for its workers."""
    figures: dict[str, Figure] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)
    """Each process's output, by pid."""

    def figure(self, name: str, unit: str, higher_is_better: bool = True) -> Figure:
        return self.figures.setdefault(name, Figure(name, unit, higher_is_better))

    # -- processes --
    def start_taskmaster_worker(self, extra_env: dict[str, str] | None = None
                                ) -> subprocess.Popen[bytes]:
        path = os.pathsep.join(p for p in (str(self.plugin_site),
                                           os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "TASKMASTER_REDIS_URL": self.url, "TASKMASTER_RELOAD_WATCH": "false",
               "PYTHONPATH": path, **(extra_env or {})}
        return self._spawn([sys.executable, "-m", "taskmaster", "-q", "worker", "--queue",
                            f"{QUEUE}=100"], env)

    def start_api(self, port: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "TASKMASTER_REDIS_URL": self.url, "TASKMASTER_RELOAD_WATCH": "false"}
        return self._spawn([sys.executable, "-m", "taskmaster", "-q", "api", "--port",
                            str(port)], env)

    def start_saq_worker(self) -> subprocess.Popen[bytes]:
        return self._spawn([sys.executable, "-c", SAQ_WORKER, self.url, SAQ_QUEUE,
                            str(WORK_STEPS)])

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None
               ) -> subprocess.Popen[bytes]:
        """A process of the bench's, its output kept in the run's folder for when it dies."""
        log = self.plugin_site / f"process-{len(self.logs)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.logs[process.pid] = log
        self.processes.append(process)
        return process

    def check_alive(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is not None:
            log = self.logs[process.pid]
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"bench process {process.args!r} exited with"
                               f" {process.returncode}:\n{tail}")

    def stop_workers(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


async def _gather_bounded(make: Callable[[int], Awaitable[Any]], total: int,
                          in_flight: int) -> None:
    """`total` calls, `in_flight` at a time: that many loops taking the next number.

    Not a task per call behind a semaphore: that costs as much CPU as a submission does.
    """
    numbers = iter(range(total))

    async def caller() -> None:
        for i in numbers:
            await make(i)

    await asyncio.gather(*(caller() for _ in range(in_flight)))


class Engines:
    """The same operations on TaskMaster and raw SAQ."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.jobs = JobClient(redis)
        entry = load_catalog().get("demo.noop")
        self.noop = entry
        self.saq = RedisQueue(redis, name=SAQ_QUEUE)

    async def tm_submit(self, _: int = 0) -> None:
        await self.jobs.submit(self.noop.function, self.noop.plugin, self.noop.version, {},
                               SubmitOptions(queue=QUEUE))

    async def saq_submit(self, _: int = 0) -> None:
        await self.saq.enqueue("noop", timeout=60)

    async def tm_bulk(self, total: int, *, work: bool = False) -> None:
        item: tuple[Any, str, str, Any, SubmitOptions] = (
            (WORK, PLUGIN, "1.0.0", {}, SubmitOptions(queue=QUEUE)) if work else
            (self.noop.function, self.noop.plugin, self.noop.version, {},
             SubmitOptions(queue=QUEUE)))
        for start in range(0, total, 1000):
            await self.jobs.submit_many([item] * min(1000, total - start))

    async def saq_bulk(self, total: int, *, work: bool = False) -> None:
        for start in range(0, total, 1000):
            await asyncio.gather(*(self.saq.enqueue("work" if work else "noop", timeout=60)
                                   for _ in range(min(1000, total - start))))

    async def records(self, engine: str) -> list[dict[str, Any]]:
        pattern = QueueKeys(QUEUE).job("*") if engine == "tm" else f"saq:job:{SAQ_QUEUE}:*"
        keys = [k async for k in self.redis.scan_iter(match=pattern, count=1000)]
        found = []
        for start in range(0, len(keys), 1000):
            for raw in await self.redis.mget(keys[start:start + 1000]):
                if raw:
                    found.append(json.loads(raw))
        return found

    async def finished(self, engine: str, total: int, deadline_s: float) -> list[dict[str, Any]]:
        """Completed records once all are done, or once 99% are and the rest stall."""
        await self.wait_done(engine, total, deadline_s)
        return await self.completed(engine)

    async def wait_done(self, engine: str, total: int, deadline_s: float) -> int:
        """Until all are done, or 99% are and the rest stall; polled with one cheap count,
        so the polling itself barely shows in the store's CPU figures. Returns the polls."""
        deadline = time.monotonic() + deadline_s
        progress = (0, time.monotonic())
        polls = 0
        while True:
            polls += 1
            if engine == "tm":
                done = int(await self.redis.zcard(QueueKeys(QUEUE).done))
            else:
                done = total - await self.saq.count("incomplete")
            if done != progress[0]:
                progress = (done, time.monotonic())
            stalled = time.monotonic() - progress[1] > STALL_S and done >= 0.99 * total
            if done >= total or stalled or time.monotonic() > deadline:
                return polls
            await asyncio.sleep(0.1)

    async def completed(self, engine: str) -> list[dict[str, Any]]:
        return [r for r in await self.records(engine) if r.get("status") == "complete"]


async def _store_usage(redis: Redis) -> tuple[float, int, int]:
    cpu = await redis.info("cpu")
    stats = await redis.info("stats")
    memory = await redis.info("memory")
    return (float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            int(stats["total_commands_processed"]), int(memory["used_memory"]))


async def _graphql_load(bench: Bench, query: str, variables: dict[str, Any], *,
                        clients: int, seconds: float, warm_up_s: float
                        ) -> tuple[list[float], int, float]:
    """One fresh API process, `clients` keep-alive HTTP clients posting the same operation
    back to back (after a warm-up that does not count)."""
    port = free_port()
    bench.start_api(port)
    await wait_for_port(port)
    body = json.dumps({"query": query, "variables": variables}).encode()
    await post_load("127.0.0.1", port, "/graphql", body, clients=clients, seconds=warm_up_s)
    try:
        return await post_load("127.0.0.1", port, "/graphql", body, clients=clients,
                               seconds=seconds)
    finally:
        bench.stop_workers()


async def _graphql_submit(bench: Bench, seconds: float, clients: int = 32) -> None:
    timings, failures, elapsed = await _graphql_load(
        bench, "mutation($i: SubmitJobInput!) { submitJob(input: $i) { id } }",
        {"i": {"function": "demo.noop", "payload": {}, "queue": QUEUE}},
        clients=clients, seconds=seconds, warm_up_s=1.0)
    timings.sort()
    bench.figure(f"GraphQL submitJob over HTTP, {clients} clients", "req/s").add(
        "tm", len(timings) / elapsed)
    bench.figure("GraphQL submitJob p99", "ms", False).add(
        "tm", percentile([int(t * 1000) for t in timings], 0.99))
    bench.figure("GraphQL submitJob failed requests", "req", False).add("tm", failures)


async def _graphql_bulk(bench: Bench, seconds: float, clients: int = 2) -> None:
    timings, failures, elapsed = await _graphql_load(
        bench, "mutation($i: [SubmitJobInput!]!) { submitJobs(inputs: $i) { id } }",
        {"i": [{"function": "demo.noop", "payload": {}, "queue": QUEUE}] * 1000},
        clients=clients, seconds=seconds, warm_up_s=0.1)
    bench.figure(f"bulk over GraphQL submitJobs (1,000 per call, {clients} clients)",
                 "jobs/s").add("tm", len(timings) * 1000 / elapsed)
    bench.figure("GraphQL submitJobs failed calls", "req", False).add("tm", failures)


async def _flush(redis: Redis) -> None:
    # SYNC: Valkey frees a flushed database lazily by default, which would make the
    # memory figures that follow meaningless.
    await redis.execute_command("FLUSHDB", "SYNC")  # type: ignore[no-untyped-call]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _drains(bench: Bench, engines: Engines, engine: str, *, work: bool = False) -> None:
    """Draining with one worker process, then with two, and what the second adds."""
    one = await _drain(bench, engines, engine, 1, work=work)
    two = await _drain(bench, engines, engine, 2, work=work)
    kind = "CPU-bound jobs" if work else "no-op jobs"
    bench.figure(f"drain of {kind}: 2 worker processes ÷ 1", "x").add(engine, two / one)


async def _drain(bench: Bench, engines: Engines, engine: str, workers: int, *,
                 work: bool = False) -> float:
    """The drain rate of pre-enqueued jobs: no-op jobs (the engine's own cost), or
    CPU-bound ones (a fifth as many), where a second process has a core's work to take."""
    await _flush(engines.redis)
    size = bench.size // 5 if work else bench.size
    if engine == "tm":
        await engines.tm_bulk(size, work=work)
    else:
        await engines.saq_bulk(size, work=work)
    cpu0, commands0, _ = await _store_usage(engines.redis)
    for _ in range(workers):
        (bench.start_taskmaster_worker if engine == "tm" else bench.start_saq_worker)()
    await engines.wait_done(engine, size, 180)
    cpu1, commands1, _ = await _store_usage(engines.redis)
    bench.stop_workers()
    done = await engines.completed(engine)
    first = min(r["started"] for r in done)
    completions = sorted(r["completed"] for r in done)
    bulk = completions[:max(1, int(0.99 * size))]
    rate = float(len(bulk) / max((bulk[-1] - first) / 1000, 1e-3))
    suffix = f"{workers} worker process{'es' if workers > 1 else ''}"
    if work:
        bench.figure(f"drain of CPU-bound jobs (first 99%), {suffix}", "jobs/s").add(
            engine, rate)
        return rate
    bench.figure(f"drain (first 99%), {suffix}", "jobs/s").add(engine, rate)
    bench.figure(f"drain, last job done after, {suffix}", "s", False).add(
        engine, (completions[-1] - first) / 1000 if len(done) == size else float("inf"))
    bench.figure(f"duplicate executions, {suffix}", "jobs", False).add(
        engine, float(sum(1 for r in done if r.get("attempts", 1) > 1)))
    if workers == 1:
        bench.figure("store CPU per processed job", "µs", False).add(
            engine, (cpu1 - cpu0) / len(done) * 1e6)
        bench.figure("store commands per processed job (scripts' included)", "cmds",
                     False).add(engine, (commands1 - commands0) / len(done))
    return rate


async def _requests_per_job(bench: Bench, engines: Engines, engine: str) -> None:
    """Requests the workers send to the store per processed job: top-level commands, seen
    through MONITOR (a script call counts once, the commands it runs not at all). A run of
    its own: MONITOR slows the store down, so no other figure is taken with it on."""
    await _flush(engines.redis)
    total = min(bench.size, 2000)
    await (engines.tm_bulk(total) if engine == "tm" else engines.saq_bulk(total))
    seen = 0
    watching = asyncio.Event()

    async def watch() -> None:
        nonlocal seen
        async with engines.redis.monitor() as monitor:
            watching.set()
            while True:
                command = await monitor.next_command()
                if command["client_type"] != "lua" and \
                        not command["command"].upper().startswith("MONITOR"):
                    seen += 1

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(watching.wait(), 10)
    (bench.start_taskmaster_worker if engine == "tm" else bench.start_saq_worker)()
    polls = await engines.wait_done(engine, total, 120)
    bench.stop_workers()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    bench.figure("store requests per processed job (a script call is one)", "req",
                      False).add(engine, max(0, seen - polls) / total)


async def _latency(bench: Bench, engines: Engines, engine: str, rate: int) -> None:
    """From the submit call to the handler's first line, both read off this machine's
    clock (the handler returns its time)."""
    await _flush(engines.redis)
    worker = (bench.start_taskmaster_worker if engine == "tm" else bench.start_saq_worker)()
    total = int(rate * bench.latency_s)
    submitted: dict[str, float] = {}

    async def submit() -> None:
        sent = time.time()
        if engine == "tm":
            view = await engines.jobs.submit(CLOCK, PLUGIN, "1.0.0", {},
                                              SubmitOptions(queue=QUEUE))
            submitted[view.id.split(":", 1)[1]] = sent
        else:
            job = await engines.saq.enqueue("clock", timeout=60)
            assert job is not None
            submitted[job.key] = sent

    # A first job, not counted, so the measurement starts with the worker serving.
    await submit()
    await engines.wait_done(engine, 1, 60)
    submitted.clear()
    start = time.perf_counter()
    pending = []
    for i in range(total):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        pending.append(asyncio.create_task(submit()))
    await asyncio.gather(*pending)
    done = await engines.finished(engine, total + 1, 60)
    bench.stop_workers()
    del worker
    waits = sorted((r["result"]["t"] - submitted[r["key"]]) * 1000 for r in done
                   if r["key"] in submitted)
    bench.figure(f"latency p50 at {rate}/s", "ms", False).add(engine, percentile(waits, 0.5))
    bench.figure(f"latency p99 at {rate}/s", "ms", False).add(engine, percentile(waits, 0.99))


async def _enqueue(bench: Bench, engines: Engines) -> None:
    for engine in ("tm", "saq"):
        submit = engines.tm_submit if engine == "tm" else engines.saq_submit
        bulk = engines.tm_bulk if engine == "tm" else engines.saq_bulk
        await _flush(engines.redis)
        started = time.perf_counter()
        await _gather_bounded(submit, bench.size, 100)
        bench.figure("enqueue one by one (100 in flight)", "jobs/s").add(
            engine, bench.size / (time.perf_counter() - started))
        await _flush(engines.redis)
        started = time.perf_counter()
        await bulk(bench.size)
        bench.figure("bulk, Python API (1,000 per call)", "jobs/s").add(
            engine, bench.size / (time.perf_counter() - started))


async def _memory(bench: Bench, engines: Engines) -> None:
    """An idle worker's RSS, and the store's bytes per retained completed job."""
    await _flush(engines.redis)
    for engine in ("tm", "saq"):
        worker = (bench.start_taskmaster_worker if engine == "tm"
                  else bench.start_saq_worker)()
        await asyncio.sleep(3.0)
        bench.check_alive(worker)
        bench.figure("idle worker RSS", "MB", False).add(engine, _rss_mb(worker.pid))
        bench.stop_workers()
    for engine in ("tm", "saq"):
        await _flush(engines.redis)
        _, _, memory0 = await _store_usage(engines.redis)
        await (engines.tm_bulk(bench.size) if engine == "tm" else engines.saq_bulk(bench.size))
        (bench.start_taskmaster_worker if engine == "tm" else bench.start_saq_worker)()
        await engines.finished(engine, bench.size, 180)
        bench.stop_workers()
        _, _, memory1 = await _store_usage(engines.redis)
        bench.figure("store bytes per retained completed job", "B", False).add(
            engine, (memory1 - memory0) / bench.size)


SCENARIOS = ("enqueue", "drain", "latency", "graphql", "subscribers", "swap", "memory")
"""What `--only` can pick; every run does all of them by default."""


async def run_bench(*, redis_url: str | None, quick: bool,
                    only: frozenset[str] = frozenset(SCENARIOS)) -> dict[str, Any]:
    size, runs, latency_s, subscribers_n = (2000, 1, 3.0, 200) if quick \
        else (10_000, 3, 10.0, 1000)
    store = None
    if redis_url is None:
        store = EmbeddedValkey(Path(tempfile.mkdtemp(prefix="taskmaster-bench-")))
        redis_url = store.start()
    redis = create_redis(redis_url, job_slots=200)
    plugin_site = Path(tempfile.mkdtemp(prefix="taskmaster-bench-plugin-"))
    install_bench_plugin(plugin_site, "1.0.0")
    bench = Bench(redis_url, size, runs, latency_s, subscribers_n, plugin_site)
    engines = Engines(redis)
    try:
        info = await redis.info("server")
        for _ in range(runs):
            if "enqueue" in only:
                await _enqueue(bench, engines)
            if "drain" in only:
                for engine in ("tm", "saq"):
                    await _drains(bench, engines, engine)
                    await _requests_per_job(bench, engines, engine)
                for engine in ("tm", "saq"):
                    await _drains(bench, engines, engine, work=True)
            if "latency" in only:
                for rate in (200, 1000):
                    for engine in ("tm", "saq"):
                        await _latency(bench, engines, engine, rate)
            if "graphql" in only:
                await _flush(redis)
                await _graphql_submit(bench, bench.latency_s)
                await _flush(redis)
                await _graphql_bulk(bench, bench.latency_s / 2)
            if "subscribers" in only:
                await _flush(redis)
                noop = engines.noop
                await subscribers(bench, engines.jobs, noop.function, noop.plugin,
                                  noop.version, bench.subscribers)
            if "swap" in only:
                await _flush(redis)
                await hot_swap(bench, engines.jobs, 500, bench.latency_s)
        if "memory" in only:
            await _memory(bench, engines)
        return {
            "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "store": f"{'valkey' if 'valkey_version' in info else 'redis'}"
                                     f" {info.get('valkey_version', info['redis_version'])}",
                            "jobs per run": size, "runs": runs, "run id": uuid.uuid4().hex[:8]},
            "figures": [figure.summary() for figure in bench.figures.values()],
        }
    finally:
        bench.stop_workers()
        await _flush(redis)
        await engines.jobs.close()
        await redis.aclose()
        if store is not None:
            store.stop()
        shutil.rmtree(plugin_site, ignore_errors=True)


def render(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [f"taskmaster bench — {env['cpus']} CPUs, Python {env['python']}, {env['store']},"
             f" {env['jobs per run']} jobs per run, median of {env['runs']} run(s)", ""]
    rows = [("figure", "TaskMaster", "raw SAQ", "ratio")]

    def cell(stats: dict[str, float] | None, unit: str) -> str:
        if stats is None:
            return "-"
        if math.isinf(stats["median"]):
            return "not all done"
        # Small figures (a pause of 0.04 s, a latency of 0.9 ms) keep two decimals.
        digits = 2 if abs(stats["median"]) < 10 else 1
        spread = f" ({stats['min']:,.{digits}f} to {stats['max']:,.{digits}f})" \
            if stats["min"] != stats["max"] else ""
        return f"{stats['median']:,.{digits}f} {unit}{spread}"

    for figure in results["figures"]:
        ratio = f"{figure['ratio']:.1f}x" if figure["ratio"] and math.isfinite(
            figure["ratio"]) else "-"
        rows.append((figure["name"], cell(figure["taskmaster"], figure["unit"]),
                     cell(figure["saq"], figure["unit"]), ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    lines.append("")
    lines.append("ratio: how many times better TaskMaster is (higher throughput, or lower time,"
                 " memory and cost)")
    return "\n".join(lines)
