"""`taskmaster serve` as a user runs it: embedded store, workers, API, signals, restarts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from taskmaster.store.embedded import free_port
from tests.fixtures.processes import Processes, alive, children_of, log_of
from tests.fixtures.server import base_env, healthy
from tests.fixtures.valkey import ExternalValkey
from tests.fixtures.waiting import wait_until

SUBMIT = "mutation($i: SubmitJobInput!) { submitJob(input: $i) { id status } }"
JOB = "query($id: ID!) { job(id: $id) { id status result version attempts } }"


def graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = httpx.post(f"{url}/graphql", json={
        "query": query, "variables": variables}, timeout=30).json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


def start_serve(processes: Processes, data_dir: Path, *args: str,
                env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    serve = processes.taskmaster("serve", "--port", str(port), "--data-dir", str(data_dir),
                                 "--workers", "2", *args, env=env or base_env(), name="serve")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: healthy(url) or serve.poll() is not None, timeout_s=30,
               message="serve healthy")
    assert serve.poll() is None, log_of(serve)
    return serve, url


def run_job(url: str, function: str, payload: dict[str, Any],
            **options: Any) -> dict[str, Any]:
    job: dict[str, Any] = graphql(url, SUBMIT, {"i": {"function": function,
                                                      "payload": payload, **options}})["submitJob"]
    return job


def finished(url: str, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = graphql(url, JOB, {"id": job_id})["job"]
        return job if job["status"] in ("COMPLETE", "FAILED") else None

    return wait_until(done, timeout_s=15, message=f"{job_id} finished")


def is_valkey(pid: int) -> bool:
    try:
        return b"valkey-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def store_and_workers(serve: subprocess.Popen[bytes]) -> list[int]:
    """The pids of the store and the two workers `serve` started."""
    return wait_until(lambda: len(children_of(serve.pid)) == 3 and children_of(serve.pid),
                      message="store and two workers running")


def test_serve_runs_store_workers_and_api_and_sigterm_stops_them_all(
        processes: Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    serve, url = start_serve(processes, data_dir)
    children = store_and_workers(serve)
    assert sum(is_valkey(pid) for pid in children) == 1
    assert (data_dir / "appendonlydir").is_dir()

    job = finished(url, run_job(url, "demo.echo", {"message": "hi"})["id"])
    assert (job["status"], job["result"], job["version"]) == ("COMPLETE", {"message": "hi"},
                                                              "1.0.0")

    os.kill(serve.pid, signal.SIGTERM)  # the supervisor alone, not its process group
    assert serve.wait(30) == 0, log_of(serve)
    for pid in children:
        wait_until(lambda pid=pid: not alive(pid), message=f"child {pid} stopped")


def test_jobs_survive_kill_9_of_the_host_and_a_restart_on_the_same_data_dir(
        processes: Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    serve, url = start_serve(processes, data_dir)
    children = store_and_workers(serve)
    done = finished(url, run_job(url, "demo.echo", {"message": "before"})["id"])
    later = run_job(url, "demo.echo", {"message": "later"}, delaySeconds=3600)
    assert later["status"] == "SCHEDULED"

    os.kill(serve.pid, signal.SIGKILL)
    serve.wait()
    for pid in children:
        wait_until(lambda pid=pid: not alive(pid), timeout_s=30,
                   message=f"child {pid} gone after kill -9 of the host")

    _, url = start_serve(processes, data_dir)
    assert graphql(url, JOB, {"id": done["id"]})["job"] == done
    assert graphql(url, JOB, {"id": later["id"]})["job"]["status"] == "SCHEDULED"
    again = finished(url, run_job(url, "demo.echo", {"message": "after"})["id"])
    assert again["result"] == {"message": "after"}


def test_a_second_serve_on_the_same_data_dir_is_refused(
        processes: Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    start_serve(processes, data_dir)
    second = subprocess.run(
        [*processes_argv(), "serve", "--port", str(free_port()), "--data-dir", str(data_dir)],
        env=base_env(), capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert "is in use by another taskmaster" in second.stderr


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*processes_argv(), "serve", "--port", str(port),
                               "--data-dir", str(tmp_path)],
                              env=base_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert not (tmp_path / "valkey.conf").exists(), "no store was started"


def test_bad_worker_weights_are_refused_before_anything_starts(tmp_path: Path) -> None:
    done = subprocess.run([*processes_argv(), "serve", "--data-dir", str(tmp_path)],
                          env=base_env(TASKMASTER_WORKER_WEIGHTS="8:4:2"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "weights '8:4:2': four whole numbers" in done.stderr
    assert not (tmp_path / "valkey.conf").exists(), "no store was started"


def processes_argv() -> list[str]:
    return [sys.executable, "-m", "taskmaster"]


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_external_redis_url_replaces_the_embedded_store(
        processes: Processes, tmp_path: Path, external_valkey: ExternalValkey, how: str) -> None:
    redis_url = external_valkey()
    data_dir = tmp_path / "data"
    if how == "flag":
        serve, url = start_serve(processes, data_dir, "--redis-url", redis_url)
    else:
        serve, url = start_serve(processes, data_dir,
                                 env=base_env(TASKMASTER_REDIS_URL=redis_url))
    assert not any(is_valkey(pid) for pid in children_of(serve.pid))
    assert not (data_dir / "valkey.conf").exists()
    job = finished(url, run_job(url, "demo.echo", {"message": how})["id"])
    assert job["result"] == {"message": how}
    external = redis.Redis.from_url(redis_url)
    try:
        key = f"taskmaster:{{default}}:job:{job['id'].split(':', 1)[1]}"
        assert external.exists(key) == 1
    finally:
        external.close()


@pytest.mark.parametrize("command", ["serve", "api"])
def test_the_api_is_never_exposed_beyond_loopback(tmp_path: Path, command: str) -> None:
    done = subprocess.run([*processes_argv(), command, "--host", "0.0.0.0",
                           "--redis-url" if command == "api" else "--data-dir",
                           "redis://127.0.0.1:1/0" if command == "api" else str(tmp_path)],
                          env=base_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "only listens on loopback" in done.stderr
    assert not (tmp_path / "valkey.conf").exists()
