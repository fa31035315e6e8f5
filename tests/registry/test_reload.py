"""Live functions: install, upgrade, roll back and remove packages on a running host."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from taskmaster.store.embedded import free_port
from tests.fixtures.packages import BuildWheel, install_wheel
from tests.fixtures.processes import Processes, log_of
from tests.fixtures.server import base_env, healthy
from tests.fixtures.waiting import eventually, wait_until

FUNCTIONS = "{ functions { name version state loadError workers { worker version } } }"
RELOAD = "mutation { reloadFunctions { converged loaded unloaded rejected" \
         " workers { id loadedVersions { plugin version } } } }"
JOB = "query($id: ID!) { job(id: $id) { id status result version attempts" \
      " history { type version message at } } }"
PLUGIN = "taskmaster-fn-test-versioned"


@dataclass
class Host:
    url: str
    target: Path
    api: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        body: dict[str, Any] = httpx.post(f"{self.url}/graphql", timeout=60, json={
            "query": query, "variables": variables}).json()
        return body

    def submit(self, function: str, payload: dict[str, Any], **options: Any) -> dict[str, Any]:
        return self.gql("mutation($i: SubmitJobInput!) { submitJob(input: $i) { id } }",
                        i={"function": function, "payload": payload, **options})

    def job(self, job_id: str) -> dict[str, Any]:
        return self.gql(JOB, id=job_id)["data"]["job"]  # type: ignore[no-any-return]

    def versions(self) -> dict[str, str | None]:
        functions = self.gql(FUNCTIONS)["data"]["functions"]
        run = next((f for f in functions if f["name"] == "versioned.run"), None)
        if run is None:
            return {}
        return {"api": run["version"], **{w["worker"]: w["version"] for w in run["workers"]}}


def start_host(processes: Processes, valkey_url: str, target: Path, *, workers: int = 2,
               **settings: str) -> Host:
    env = base_env(TASKMASTER_REDIS_URL=valkey_url, PYTHONPATH=str(target),
                   TASKMASTER_RELOAD_WATCH_INTERVAL_S="0.3", TASKMASTER_WORKER_LEASE_S="2",
                   TASKMASTER_WORKER_SHUTDOWN_GRACE_S="2",
                   **{f"TASKMASTER_{k.upper()}": v for k, v in settings.items()})
    port = free_port()
    api = processes.taskmaster("api", "--port", str(port), env=env, name="api")
    started = [processes.taskmaster("worker", env=env, name="worker") for _ in range(workers)]
    host = Host(f"http://127.0.0.1:{port}", target, api, started)
    wait_until(lambda: healthy(host.url), timeout_s=30, message="API up")
    wait_until(lambda: len(host.gql("{ workers { id } }")["data"]["workers"]) >= workers,
               timeout_s=30, message="workers reporting")
    return host


async def finished(host: Host, job_id: str, timeout_s: float = 30) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = host.job(job_id)
        return job if job["status"] in ("COMPLETE", "FAILED", "CANCELLED") else None

    return await eventually(done, timeout_s=timeout_s, message=f"{job_id} finished")


def code(body: dict[str, Any]) -> str:
    return body["errors"][0]["extensions"]["code"]  # type: ignore[no-any-return]


async def test_upgrade_under_load_loses_and_fails_nothing(
        processes: Processes, valkey_url: str, redis: Redis, wheel_of: BuildWheel,
        tmp_path: Path) -> None:
    target = tmp_path / "site"
    install_wheel(wheel_of("versioned-1"), target)
    host = start_host(processes, valkey_url, target, reload_watch="false")
    submitted: list[tuple[str, str]] = []
    swap: dict[str, float] = {}

    async def load(seconds: float) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                for function, payload in (("versioned.run", {"seconds": 0.3}),
                                          ("demo.echo", {"message": "steady"})):
                    body = (await client.post(f"{host.url}/graphql", json={
                        "query": "mutation($i: SubmitJobInput!) { submitJob(input: $i)"
                                 " { id } }",
                        "variables": {"i": {"function": function, "payload": payload}}})).json()
                    assert "errors" not in body, body
                    submitted.append((function, body["data"]["submitJob"]["id"]))
                await asyncio.sleep(0.02)

    async def upgrade() -> dict[str, Any]:
        await asyncio.sleep(2.0)
        await asyncio.to_thread(install_wheel, wheel_of("versioned-2"), target)
        swap["at"] = time.time()
        result = await asyncio.to_thread(host.gql, RELOAD)
        swap["done"] = time.time()
        return result["data"]["reloadFunctions"]  # type: ignore[no-any-return]

    _, reloaded = await asyncio.gather(load(6.0), upgrade())
    assert reloaded["converged"] and reloaded["loaded"] == [f"{PLUGIN} 2.0.0"]
    assert all({"plugin": PLUGIN, "version": "2.0.0"} in w["loadedVersions"]
               for w in reloaded["workers"])

    jobs = [(function, await finished(host, job_id)) for function, job_id in submitted]
    assert all(job["status"] == "COMPLETE" for _, job in jobs), "nothing failed or was lost"
    versioned = [job for function, job in jobs if function == "versioned.run"]
    for job in versioned:
        assert job["result"]["version"] == job["version"], "the version recorded is the code"
        assert job["result"]["resource"] == job["version"], "on_init of that version ran"
    seen = {job["version"] for job in versioned}
    assert seen == {"1.0.0", "2.0.0"}
    by_version = host.gql("""{ jobs(filter: {function: "versioned.run", version: "1.0.0"},
        first: 500) { edges { node { version } } } }""")["data"]["jobs"]["edges"]
    assert len(by_version) == sum(job["version"] == "1.0.0" for job in versioned)
    starts = sorted((_started_at(job), job["version"]) for job in versioned)
    last_v1 = max(t for t, v in starts if v == "1.0.0")
    first_v2 = min(t for t, v in starts if v == "2.0.0")
    assert all(v == "2.0.0" for t, v in starts if t > first_v2)
    pause_s = first_v2 - last_v1
    steady = sorted(_started_at(job) for function, job in jobs if function == "demo.echo")
    window = [t for t in steady if swap["at"] - 1 <= t <= swap["done"] + 1]
    steady_gap_s = max(b - a for a, b in itertools.pairwise(window))
    print(f"\nswapped function paused {pause_s:.3f}s (last 1.0.0 start → first 2.0.0 start);"
          f" unchanged demo.echo longest gap between starts during the swap {steady_gap_s:.3f}s;"
          f" reloadFunctions took {swap['done'] - swap['at']:.3f}s; {len(jobs)} jobs")
    assert pause_s <= 1.0 + 0.3 + 0.5, "resumes within 1 s plus its longest running job"
    assert steady_gap_s < 0.5, "unchanged functions never pause"


def _started_at(job: dict[str, Any]) -> float:
    from datetime import datetime

    started = [e for e in job["history"] if e["type"] == "started"][-1]
    return datetime.fromisoformat(started["at"]).timestamp()


async def test_new_package_removal_waiting_jobs_and_rollback(
        processes: Processes, valkey_url: str, redis: Redis, wheel_of: BuildWheel,
        tmp_path: Path) -> None:
    target = tmp_path / "site"
    target.mkdir()
    host = start_host(processes, valkey_url, target, workers=1)
    assert code(host.submit("versioned.run", {})) == "UNKNOWN_FUNCTION"

    install_wheel(wheel_of("versioned-2"), target)  # picked up by watching, no restart
    wait_until(lambda: host.versions().get("api") == "2.0.0", timeout_s=15,
               message="new package loaded")
    job = await finished(host, host.submit("versioned.run", {})["data"]["submitJob"]["id"])
    assert job["result"]["version"] == "2.0.0"

    later = host.submit("versioned.run", {}, delaySeconds=1.5)["data"]["submitJob"]["id"]
    removed = _cli("functions", "remove", PLUGIN, "--target", str(target),
                   "--url", f"{host.url}/graphql")
    assert removed.returncode == 0, removed.stderr
    assert "converged" in removed.stdout
    # The API's watcher may have noticed the removal before the CLI's reload request.
    wait_until(lambda: host.versions() == {}, timeout_s=15, message="unloaded everywhere")
    assert code(host.submit("versioned.run", {})) == "UNKNOWN_FUNCTION"

    def waiting() -> bool:
        return "waiting" in [e["type"] for e in host.job(later)["history"]]

    wait_until(waiting, timeout_s=15, message="queued job waits for its function")
    assert host.job(later)["status"] == "QUEUED"

    rolled_back = _cli("functions", "install", str(wheel_of("versioned-1")), "--target",
                       str(target), "--url", f"{host.url}/graphql")
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert "converged" in rolled_back.stdout
    wait_until(lambda: set(host.versions().values()) == {"1.0.0"}, timeout_s=15,
               message="rolled back everywhere")
    done = await finished(host, later)
    assert done["status"] == "COMPLETE" and done["result"]["version"] == "1.0.0"
    assert done["attempts"] == 1, "waiting spent no attempt"


async def test_a_broken_version_is_rejected_and_the_old_one_keeps_serving(
        processes: Processes, valkey_url: str, redis: Redis, wheel_of: BuildWheel,
        tmp_path: Path) -> None:
    target = tmp_path / "site"
    install_wheel(wheel_of("versioned-2"), target)
    host = start_host(processes, valkey_url, target, reload_watch="false")
    install_wheel(wheel_of("versioned-3"), target)
    result = host.gql(RELOAD)["data"]["reloadFunctions"]
    assert result["rejected"] == [
        f"{PLUGIN}: RuntimeError: version 3.0.0 is broken on purpose"]
    assert result["converged"]
    functions = host.gql(FUNCTIONS)["data"]["functions"]
    run = next(f for f in functions if f["name"] == "versioned.run")
    assert run["version"] == "2.0.0" and run["state"] == "ACTIVE"
    assert "3.0.0 rejected; 2.0.0 keeps serving" in run["loadError"]
    assert "Traceback" in run["loadError"]
    assert {w["version"] for w in run["workers"]} == {"2.0.0"}
    job = await finished(host, host.submit("versioned.run", {})["data"]["submitJob"]["id"])
    assert job["status"] == "COMPLETE" and job["result"]["version"] == "2.0.0"
    listed = _cli("functions", "list", "--url", f"{host.url}/graphql")
    assert listed.returncode == 2
    assert "version 3.0.0 is broken on purpose" in listed.stderr


async def test_drain_timeout_requeues_running_jobs_without_spending_an_attempt(
        processes: Processes, valkey_url: str, redis: Redis, wheel_of: BuildWheel,
        tmp_path: Path) -> None:
    target = tmp_path / "site"
    install_wheel(wheel_of("versioned-1"), target)
    host = start_host(processes, valkey_url, target, workers=1, reload_watch="false",
                      reload_drain_timeout_s="0.5")
    job_id = host.submit("versioned.run", {"seconds": 5})["data"]["submitJob"]["id"]
    wait_until(lambda: host.job(job_id)["status"] == "ACTIVE", message="long job running")
    install_wheel(wheel_of("versioned-2"), target)
    assert host.gql(RELOAD)["data"]["reloadFunctions"]["converged"]
    job = await finished(host, job_id)
    assert job["status"] == "COMPLETE" and job["result"]["version"] == "2.0.0"
    assert job["attempts"] == 1
    requeued = [e for e in job["history"] if e["type"] == "requeued"]
    assert requeued and "drain timeout" in requeued[0]["message"]
    versions = [e["version"] for e in job["history"] if e["type"] == "started"]
    assert versions == ["1.0.0", "2.0.0"]


async def test_sighup_to_one_worker_reloads_every_process(
        processes: Processes, valkey_url: str, redis: Redis, wheel_of: BuildWheel,
        tmp_path: Path) -> None:
    target = tmp_path / "site"
    install_wheel(wheel_of("versioned-1"), target)
    host = start_host(processes, valkey_url, target, reload_watch="false")
    install_wheel(wheel_of("versioned-2"), target)
    time.sleep(1.0)  # watching is off: nothing may change on its own
    assert set(host.versions().values()) == {"1.0.0"}
    os.kill(host.workers[0].pid, signal.SIGHUP)
    wait_until(lambda: set(host.versions().values()) == {"2.0.0"} and len(host.versions()) == 3,
               timeout_s=15, message="API and both workers on 2.0.0")
    assert host.workers[0].poll() is None, log_of(host.workers[0])


async def test_install_over_the_api_is_off_unless_enabled(
        processes: Processes, valkey_url: str, redis: Redis, wheel_of: BuildWheel,
        tmp_path: Path) -> None:
    target = tmp_path / "site"
    install_wheel(wheel_of("versioned-1"), target)
    wheels = str(wheel_of("versioned-2").parent)
    empty_index = tmp_path / "index"  # a local, empty index: no network
    empty_index.mkdir()
    install = "mutation($r: String!) { installFunction(requirement: $r) { converged loaded } }"
    host = start_host(processes, valkey_url, target, workers=1, reload_watch="false")
    refused = host.gql(install, r=f"{PLUGIN}==2.0.0")
    assert code(refused) == "FORBIDDEN" and "disabled" in refused["errors"][0]["message"]
    host.api.terminate()
    host.api.wait(15)

    # A second API, allowed to install; the first host's worker stays and must follow.
    enabled = start_host(processes, valkey_url, target, workers=0, reload_watch="false",
                         reload_install_enabled="true", reload_install_find_links=wheels,
                         reload_install_index_url=empty_index.as_uri(),
                         reload_install_target=str(target))
    for bad in ("--index-url=http://evil", "x; rm -rf /", "git+https://example.com/x.git",
                "file:///etc/passwd"):
        assert code(enabled.gql(install, r=bad)) == "INVALID_ARGUMENT", bad
    result = enabled.gql(install, r=f"{PLUGIN}==2.0.0")["data"]["installFunction"]
    assert result["loaded"] == [f"{PLUGIN} 2.0.0"]
    assert result["converged"], "the first host's worker reloaded too"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskmaster", "-q", *args], env=base_env(),
                          capture_output=True, text=True, timeout=120)
