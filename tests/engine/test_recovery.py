"""At-least-once under worker faults, with real worker processes: kill -9, poison, pause."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis

from taskmaster.engine.jobs import JobClient, JobStatus, JobView, SubmitOptions
from taskmaster.registry import load_catalog
from taskmaster.store.embedded import free_port
from tests.engine.conftest import finished
from tests.fixtures.packages import InstallPackage
from tests.fixtures.processes import Processes, log_of
from tests.fixtures.server import base_env
from tests.fixtures.waiting import eventually, wait_until

LEASE_S = 1.0
AddPath = Callable[[Path], None]


def chaos_env(valkey_url: str, package: Path, ledger: Path) -> dict[str, str]:
    return base_env(TASKMASTER_REDIS_URL=valkey_url, PYTHONPATH=str(package),
                    TASKMASTER_WORKER_LEASE_S=str(LEASE_S), TM_CHAOS_LEDGER=str(ledger),
                    TASKMASTER_WORKER_SHUTDOWN_GRACE_S="2")


def starts(ledger: Path, job_id: str) -> list[tuple[int, int]]:
    """(attempt, pid) of every start of the job the chaos functions noted."""
    text = ledger.read_text() if ledger.exists() else ""
    return [(int(a), int(p)) for kind, j, a, p in (line.split() for line in text.splitlines())
            if kind == "start" and j == job_id]


async def submit_chaos(jobs: JobClient, on_sys_path: AddPath, package: Path, function: str,
                       payload: dict[str, float]) -> JobView:
    on_sys_path(package)
    entry = load_catalog().get(function)
    return await jobs.submit(entry.function, entry.plugin, entry.version, payload,
                             SubmitOptions())


async def test_a_job_whose_worker_is_killed_completes_on_another_worker(
        valkey_url: str, redis: Redis, jobs: JobClient, processes: Processes,
        install_package: InstallPackage, on_sys_path: AddPath, tmp_path: Path) -> None:
    package, ledger = install_package("chaos"), tmp_path / "ledger"
    env = chaos_env(valkey_url, package, ledger)
    first = processes.taskmaster("worker", env=env, name="worker-a")
    job = await submit_chaos(jobs, on_sys_path, package, "chaos.pid", {"seconds": 3})
    wait_until(lambda: starts(ledger, job.id), timeout_s=20, message="attempt 1 started")
    second = processes.taskmaster("worker", env=env, name="worker-b")
    wait_until(lambda: "serving" in log_of(second), timeout_s=20, message="worker b up")
    os.kill(first.pid, signal.SIGKILL)
    killed_at_ms = time.time() * 1000

    done = await finished(jobs, job.id, timeout_s=20)
    assert done.status == JobStatus.COMPLETE, log_of(second)
    assert done.result == {"pid": second.pid, "attempt": 2}
    assert starts(ledger, job.id) == [(1, first.pid), (2, second.pid)]
    types = [e.type for e in done.history]
    assert types == ["submitted", "started", "recovered", "started", "completed"]
    recovered = done.history[2]
    assert recovered.at_ms - killed_at_ms <= 3 * LEASE_S * 1000, "within lease + sweep"
    assert done.history[1].worker != done.history[3].worker


async def test_a_job_that_keeps_killing_its_worker_is_dead_lettered_as_poison(
        valkey_url: str, redis: Redis, jobs: JobClient, processes: Processes,
        install_package: InstallPackage, on_sys_path: AddPath, tmp_path: Path) -> None:
    package = install_package("chaos")
    env = chaos_env(valkey_url, package, tmp_path / "ledger")
    serve = processes.taskmaster("serve", "--redis-url", valkey_url, "--workers", "2",
                                 "--port", str(free_port()), env=env, name="serve")
    poison = await submit_chaos(jobs, on_sys_path, package, "chaos.die", {})
    healthy = [await submit_chaos(jobs, on_sys_path, package, "chaos.pid", {"seconds": 0.05})
               for _ in range(20)]

    dead = await finished(jobs, poison.id, timeout_s=45)
    assert dead.status == JobStatus.FAILED, log_of(serve)
    assert dead.error == "worker died 3 times running it (poison job)"
    types = [e.type for e in dead.history]
    # Runs 2 and 3 were recovered suspects, whose start is on record before they run (the
    # first run's start may still have been held back when it killed its worker).
    assert [e.attempt for e in dead.history if e.type == "started" and e.attempt != 1] \
        == [2, 3], "never a fourth run"
    assert types.count("recovered") == 2 and types[-2:] == ["failed", "dead_lettered"]
    assert all(e.worker for e in dead.history if e.type == "recovered"), "names the worker"
    for job in healthy:
        assert (await finished(jobs, job.id, timeout_s=30)).status == JobStatus.COMPLETE
    assert serve.poll() is None, "the supervisor kept replacing its workers"
    assert log_of(serve).count("exited with -9") >= 3


async def test_a_paused_workers_late_result_does_not_overwrite_the_new_attempt(
        valkey_url: str, redis: Redis, jobs: JobClient, processes: Processes,
        install_package: InstallPackage, on_sys_path: AddPath, tmp_path: Path) -> None:
    package, ledger = install_package("chaos"), tmp_path / "ledger"
    env = chaos_env(valkey_url, package, ledger)
    paused = processes.taskmaster("worker", env=env, name="worker-a")
    job = await submit_chaos(jobs, on_sys_path, package, "chaos.pid", {"seconds": 1.5})
    wait_until(lambda: starts(ledger, job.id), timeout_s=20, message="attempt 1 started")
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        other = processes.taskmaster("worker", env=env, name="worker-b")
        wait_until(lambda: len(starts(ledger, job.id)) == 2, timeout_s=20,
                   message="attempt 2 started elsewhere")
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    done = await finished(jobs, job.id, timeout_s=20)
    assert done.result == {"pid": other.pid, "attempt": 2}

    def stale_attempt_stopped() -> bool:
        log = log_of(paused)
        return "lost the lease" in log or "discarded the result" in log

    await eventually(stale_attempt_stopped, timeout_s=10, message="stale attempt fenced")
    final = await jobs.get(job.id)
    assert [e.type for e in final.history].count("completed") == 1
    assert final.result == {"pid": other.pid, "attempt": 2}
