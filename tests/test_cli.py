"""The `taskmaster` command against a real server: output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from redis.asyncio import Redis

from taskmaster.store.embedded import free_port
from tests.fixtures.server import Server, base_env


def taskmaster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskmaster", "-q", *args], env=base_env(),
                          capture_output=True, text=True, timeout=60)


def test_submit_and_wait_prints_the_completed_job(server: Server, server_redis: Redis) -> None:
    done = taskmaster("submit", "demo.echo", "--payload", '{"message": "hi"}', "--wait",
                      "--url", server.graphql_url)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "COMPLETE"
    assert job["result"] == {"message": "hi"}
    assert (job["plugin"], job["version"], job["attempts"]) == ("taskmaster-fn-demo", "1.0.0", 1)
    assert job["enqueuedAt"] and job["startedAt"] and job["completedAt"]

    shown = taskmaster("job", job["id"], "--url", server.graphql_url)
    assert shown.returncode == 0
    assert [e["type"] for e in json.loads(shown.stdout)["history"]] == [
        "submitted", "started", "completed"]


def test_submit_without_wait_returns_at_once(server: Server, server_redis: Redis) -> None:
    done = taskmaster("submit", "demo.sleep", "--payload", '{"seconds": 5}', "--priority",
                      "high", "--url", server.graphql_url)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] in ("QUEUED", "ACTIVE") and job["priority"] == "HIGH"
    taskmaster("cancel", job["id"], "--url", server.graphql_url)


def test_failed_job_exits_non_zero_with_a_clear_message(server: Server,
                                                        server_redis: Redis) -> None:
    done = taskmaster("submit", "demo.fail", "--payload", '{"retryable": false}', "--wait",
                      "--url", server.graphql_url)
    assert done.returncode == 1
    assert json.loads(done.stdout)["status"] == "FAILED"
    assert "ended FAILED after 1 attempt(s): NonRetryableError: demo failure" in done.stderr


def test_unknown_function_and_invalid_payload_exit_2(server: Server, server_redis: Redis) -> None:
    unknown = taskmaster("submit", "demo.ecko", "--url", server.graphql_url)
    assert unknown.returncode == 2
    assert "no function named 'demo.ecko' is loaded" in unknown.stderr
    invalid = taskmaster("submit", "demo.echo", "--payload", '{"message": 1}',
                         "--url", server.graphql_url)
    assert invalid.returncode == 2
    assert "invalid payload for 'demo.echo'" in invalid.stderr and "$.message" in invalid.stderr
    not_json = taskmaster("submit", "demo.echo", "--payload", "{message: hi}",
                          "--url", server.graphql_url)
    assert not_json.returncode == 2
    assert "--payload is not valid JSON" in not_json.stderr


def test_missing_job_exits_4(server: Server) -> None:
    done = taskmaster("job", "default:nope", "--url", server.graphql_url)
    assert done.returncode == 4
    assert "no job with id 'default:nope'" in done.stderr


def test_unreachable_server_exits_3() -> None:
    done = taskmaster("job", "default:x", "--url", f"http://127.0.0.1:{free_port()}/graphql")
    assert done.returncode == 3
    assert "cannot reach the TaskMaster server" in done.stderr


def test_json_belongs_to_the_action_not_its_group() -> None:
    misplaced = taskmaster("functions", "--json", "list", "--local")
    assert misplaced.returncode == 2 and "unrecognized arguments: --json" in misplaced.stderr
    placed = taskmaster("functions", "list", "--local", "--json")
    assert placed.returncode == 0
    assert "demo.echo" in {f["name"] for f in json.loads(placed.stdout)}


def test_bad_setting_names_the_variable() -> None:
    worker = subprocess.run([sys.executable, "-m", "taskmaster", "worker"],
                            env=base_env(TASKMASTER_WORKER_CONCURRENCY="many"),
                            capture_output=True, text=True, timeout=60)
    assert worker.returncode == 2
    assert "TASKMASTER_WORKER_CONCURRENCY" in worker.stderr


def test_worker_without_store_url_explains_itself() -> None:
    done = subprocess.run([sys.executable, "-m", "taskmaster", "worker"], env=base_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "TASKMASTER_REDIS_URL" in done.stderr


def test_cancel_retry_priority_jobs_and_queues(server: Server, server_redis: Redis) -> None:
    url = ("--url", server.graphql_url)
    submitted = taskmaster("submit", "demo.echo", "--payload", '{"message": "later"}',
                           "--delay", "3600", "--idempotency-key", "cli-1", *url)
    job_id = json.loads(submitted.stdout)["id"]
    moved = taskmaster("priority", job_id, "critical", *url)
    assert moved.returncode == 0 and json.loads(moved.stdout)["priority"] == "CRITICAL"
    listed = taskmaster("jobs", "--status", "scheduled", *url)
    assert job_id in listed.stdout and "CRITICAL" in listed.stdout
    queues = taskmaster("queues", *url)
    assert "default" in queues.stdout and "CRITICAL/HIGH/NORMAL/LOW" in queues.stdout
    cancelled = taskmaster("cancel", job_id, *url)
    assert json.loads(cancelled.stdout)["status"] == "CANCELLED"
    twice = taskmaster("cancel", job_id, *url)
    assert twice.returncode == 5 and "already CANCELLED" in twice.stderr
    retried = taskmaster("retry", job_id, *url)
    assert retried.returncode == 0


def test_dlq_list_show_replay_and_purge(server: Server, server_redis: Redis) -> None:
    url = ("--url", server.graphql_url)
    ids = [json.loads(taskmaster("submit", "demo.fail", "--payload",
                                 json.dumps({"message": f"fault {i}", "retryable": False}),
                                 "--wait", *url).stdout)["id"] for i in range(2)]
    listed = taskmaster("dlq", "list", "--function", "demo.fail", *url)
    assert listed.returncode == 0
    assert all(job_id in listed.stdout for job_id in ids)
    assert "NonRetryableError: fault 1" in listed.stdout
    shown = json.loads(taskmaster("dlq", "show", ids[0], *url).stdout)
    assert shown["status"] == "FAILED" and shown["history"][-1]["type"] == "dead_lettered"
    nothing = taskmaster("dlq", "replay", *url)
    assert nothing.returncode == 2 and "--all" in nothing.stderr
    replayed = taskmaster("dlq", "replay", ids[0], *url)
    assert replayed.stdout.strip() == "replayed 1 dead letter(s)"
    purged = taskmaster("dlq", "purge", "--all", "--error", "fault 1", *url)
    assert purged.stdout.strip() == "purged 1 dead letter(s)"
    assert taskmaster("job", ids[1], *url).returncode == 4
