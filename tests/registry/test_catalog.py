"""Discovery and loading of real, pip-installed function packages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from taskmaster.engine.jobs import JobClient, JobStatus, SubmitOptions
from taskmaster.errors import UnknownFunctionError
from taskmaster.registry import load_catalog
from tests.fixtures.packages import InstallPackage
from tests.fixtures.processes import Processes, log_of
from tests.fixtures.server import base_env
from tests.fixtures.waiting import eventually, wait_until

AddPath = Callable[[Path], None]


def test_installed_demo_package_is_discovered_with_its_metadata_version() -> None:
    catalog = load_catalog()
    demo = next(p for p in catalog.plugins if p.name == "taskmaster-fn-demo")
    assert demo.ok and demo.version == "1.0.0"
    assert "taskmaster_fn_demo" in demo.modules
    entry = catalog.get("demo.echo")
    assert (entry.plugin, entry.version, entry.function.queue) == (
        "taskmaster-fn-demo", "1.0.0", "default")
    with pytest.raises(UnknownFunctionError, match=r"no function named 'demo\.ecko'"):
        catalog.get("demo.ecko")


def test_two_packages_declaring_one_job_type_is_a_load_error_naming_both(
        install_package: InstallPackage, on_sys_path: AddPath) -> None:
    on_sys_path(install_package("clash"))
    catalog = load_catalog()
    clash = next(p for p in catalog.plugins if p.name == "taskmaster-fn-test-clash")
    assert not clash.ok
    assert clash.error is not None
    assert "'demo.echo'" in clash.error
    assert "'taskmaster-fn-demo'" in clash.error and "'taskmaster-fn-test-clash'" in clash.error
    assert catalog.get("demo.echo").plugin == "taskmaster-fn-demo"
    with pytest.raises(UnknownFunctionError):
        catalog.get("clash.other")  # the rejected package serves nothing


def test_a_package_that_fails_to_import_is_reported_and_others_still_load(
        install_package: InstallPackage, on_sys_path: AddPath) -> None:
    on_sys_path(install_package("broken"))
    catalog = load_catalog()
    broken = next(p for p in catalog.plugins if p.name == "taskmaster-fn-test-broken")
    assert broken.version == "0.2.0"
    assert broken.error is not None
    assert broken.error.splitlines()[0] == \
        "ImportError: taskmaster_fn_test_broken is broken on purpose"
    assert "Traceback" in broken.error
    assert catalog.get("demo.echo").plugin == "taskmaster-fn-demo"


async def test_on_init_opens_resources_and_a_failing_on_init_rejects_the_package(
        install_package: InstallPackage, on_sys_path: AddPath,
        monkeypatch: pytest.MonkeyPatch) -> None:
    on_sys_path(install_package("lifecycle"))
    catalog = load_catalog(initialise=True)
    await catalog.start()
    assert catalog.resources_of("taskmaster-fn-test-lifecycle") == {
        "greeting": "hello from taskmaster-fn-test-lifecycle 2.3.0"}
    assert catalog.get("lifecycle.greet").version == "2.3.0"

    monkeypatch.setenv("TM_LIFECYCLE_FAIL_INIT", "1")
    failing = load_catalog(initialise=True)
    await failing.start()
    plugin = next(p for p in failing.plugins if p.name == "taskmaster-fn-test-lifecycle")
    assert plugin.error is not None
    assert plugin.error.splitlines()[0] == \
        "on_init failed: RuntimeError: on_init refused on purpose"
    with pytest.raises(UnknownFunctionError):
        failing.get("lifecycle.greet")
    assert failing.get("demo.echo")


def test_functions_list_command_reports_load_errors(install_package: InstallPackage) -> None:
    env = base_env(PYTHONPATH=str(install_package("clash")))
    done = subprocess.run([sys.executable, "-m", "taskmaster", "functions", "list", "--local"],
                          env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "demo.echo   taskmaster-fn-demo  1.0.0    default" in done.stdout
    assert "taskmaster-fn-test-clash" in done.stderr and "taskmaster-fn-demo" in done.stderr


async def test_lifecycle_hooks_run_in_every_worker_process(
        install_package: InstallPackage, on_sys_path: AddPath, processes: Processes,
        valkey_url: str, redis: Redis, tmp_path: Path) -> None:
    package_dir = install_package("lifecycle")
    log = tmp_path / "lifecycle.log"
    env = base_env(TASKMASTER_REDIS_URL=valkey_url, PYTHONPATH=str(package_dir),
                   TM_LIFECYCLE_LOG=str(log))
    workers = [processes.taskmaster("worker", env=env, name="worker") for _ in range(2)]
    pids = {str(w.pid) for w in workers}

    def lines(kind: str) -> set[str]:
        text = log.read_text() if log.exists() else ""
        return {line.split()[1] for line in text.splitlines() if line.startswith(kind)}

    wait_until(lambda: lines("init") == pids, timeout_s=30, message="on_init in each worker")

    on_sys_path(package_dir)
    entry = load_catalog().get("lifecycle.greet")
    jobs = JobClient(redis)
    try:
        job = await jobs.submit(entry.function, entry.plugin, entry.version, {},
                                SubmitOptions())

        async def complete() -> bool:
            return (await jobs.get(job.id)).status == JobStatus.COMPLETE

        await eventually(complete, timeout_s=15, message="greet complete")
        done = await jobs.get(job.id)
    finally:
        await jobs.close()
    assert done.result == {"greeting": "hello from taskmaster-fn-test-lifecycle 2.3.0",
                           "version": "2.3.0", "attempt": 1}
    assert done.queue == "lifecycle"

    for worker in workers:
        os.kill(worker.pid, signal.SIGTERM)
    for worker in workers:
        assert worker.wait(30) == 0, log_of(worker)
    assert lines("shutdown") == pids


async def test_an_editable_install_is_not_hot_reloaded_and_says_what_to_do() -> None:
    import dataclasses

    from taskmaster.registry.discovery import discover

    catalog = load_catalog()
    demo = next(d for d in discover() if d.name == "taskmaster-fn-demo")
    edited = dataclasses.replace(demo, version="1.0.1", fingerprint="1.0.1+edited",
                                 editable=True)
    outcome = await catalog.sync(installed=[edited])
    error = outcome.rejected["taskmaster-fn-demo"]
    assert "editable mode" in error and "pip install <path>" in error
    assert catalog.get("demo.echo").version == "1.0.0", "the loaded version keeps serving"
    assert catalog.runnable("demo.echo") is not None
    # The watcher asks the same question every scan: a rejected version is not news.
    assert catalog.pending({edited.key: edited}) == ([], [])
    newer = dataclasses.replace(edited, fingerprint="1.0.2+edited")
    assert catalog.pending({newer.key: newer}) == ([newer.key], []), "a new change is"


async def test_removing_a_package_unloads_exactly_its_modules_after_on_shutdown(
        install_package: InstallPackage, on_sys_path: AddPath, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    log = tmp_path / "lifecycle.log"
    monkeypatch.setenv("TM_LIFECYCLE_LOG", str(log))
    package_dir = install_package("lifecycle")
    on_sys_path(package_dir)
    catalog = load_catalog(initialise=True)
    await catalog.start()
    assert "taskmaster_fn_test_lifecycle" in sys.modules
    drained: list[set[str]] = []

    async def drain(functions: set[str]) -> None:
        drained.append(functions)

    sys.path.remove(str(package_dir))
    outcome = await catalog.sync(drain)
    sys.path.insert(0, str(package_dir))  # for the fixture's own cleanup
    assert outcome.unloaded == ["taskmaster-fn-test-lifecycle 2.3.0"]
    assert drained == [{"lifecycle.greet"}]
    assert "taskmaster_fn_test_lifecycle" not in sys.modules
    assert "taskmaster_fn_demo" in sys.modules, "other plugins' modules stay"
    assert log.read_text().split()[::2] == ["init", "shutdown"]
    with pytest.raises(UnknownFunctionError):
        catalog.get("lifecycle.greet")
