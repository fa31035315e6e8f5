"""Commands on jobs, queues, workers and dead letters, all through the API."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from taskmaster.commands.output import (
    connect,
    end_progress_bar,
    ms,
    print_rows,
    print_table,
    progress_bar,
)
from taskmaster.errors import JobFailedError

EXIT_INVALID_ARGUMENT = 2
EXIT_INVALID_PAYLOAD = 2


def submit(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        print(f"taskmaster: --payload is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_INVALID_PAYLOAD
    job_input: dict[str, Any] = {"function": args.function, "payload": payload}
    for key, value in (("priority", args.priority), ("queue", args.queue),
                       ("delaySeconds", args.delay), ("maxAttempts", args.max_attempts),
                       ("runAt", args.run_at), ("idempotencyKey", args.idempotency_key)):
        if value is not None:
            job_input[key] = value
    with connect(args) as client:
        job = client.raw_submit(job_input)
        if args.wait:
            client.wait(job["id"], args.timeout, on_update=progress_bar(args))
            end_progress_bar(args)
            job = client.raw_job(job["id"])
    print(json.dumps(job, indent=2))
    if args.wait and job["status"] != "COMPLETE":
        raise JobFailedError(
            f"job {job['id']} ended {job['status']} after {job['attempts']} attempt(s):"
            f" {job['error'] or 'no error recorded'}"
            if job["status"] in ("FAILED", "CANCELLED") else
            f"job {job['id']} is still {job['status']} after {args.timeout}s")
    return 0


def job(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if getattr(args, "follow", False):
            client.wait(args.id, None, on_update=progress_bar(args))
            end_progress_bar(args)
        print(json.dumps(client.raw_job(args.id), indent=2))
    return 0


def job_action(mutation: str, **arguments: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        extra = {k: getattr(args, v) for k, v in arguments.items()}
        with connect(args) as client:
            print(json.dumps(client.act(mutation, args.id, **extra), indent=2))
        return 0

    return run


def jobs(args: argparse.Namespace) -> int:
    flt = {k: v for k, v in (("status", args.status), ("queue", args.queue),
                             ("function", args.function)) if v is not None}
    with connect(args) as client:
        rows = client.raw_list("jobs", {"filter": flt, "first": args.limit},
                               "$filter: JobFilter, $first: Int")
    print_rows(args, rows, ("ID", "FUNCTION", "STATUS", "PRIORITY", "ATTEMPTS", "ERROR"), [
        (j["id"], j["function"], j["status"], j["priority"],
         f"{j['attempts']}/{j['maxAttempts']}", j["error"] or "") for j in rows])
    return 0


def workers(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rows = client.workers()
    print_rows(args, rows, ("WORKER", "HOST", "PID", "QUEUES", "RUNNING", "VERSIONS",
                             "HEARTBEAT"), [
        (w["id"], w["host"], str(w["pid"]),
         " ".join(f"{c['queue']}={c['concurrency']}" for c in w["concurrency"]),
         str(w["runningJobs"]),
         " ".join(f"{v['plugin']}={v['version']}" for v in w["loadedVersions"]),
         w["lastHeartbeat"]) for w in rows])
    return 0


def top(args: argparse.Namespace) -> int:
    """A live view of queues and workers, redrawn every --interval seconds."""
    with connect(args) as client:
        while True:
            queues, workers = client.queues(), client.workers()
            if args.json:
                print(json.dumps({"queues": queues, "workers": workers}))
            else:
                if not args.once:
                    sys.stdout.write("\x1b[2J\x1b[H")  # clear the terminal
                print(f"taskmaster top — {len(workers)} worker(s)"
                      f" — {time.strftime('%H:%M:%S')}")
                print_table(("QUEUE", "QUEUED", "ACTIVE", "SCHEDULED", "DEAD", "DONE/MIN",
                              "FAILED/MIN", "WAIT P50/P99 MS"), [
                    (q["name"], str(q["queued"]), str(q["active"]), str(q["scheduled"]),
                     str(q["deadLettered"]), str(q["completedPerMinute"]),
                     str(q["failedPerMinute"]),
                     f"{ms(q['waitP50Ms'])}/{ms(q['waitP99Ms'])}") for q in queues])
            sys.stdout.flush()
            if args.once:
                return 0
            time.sleep(args.interval)


def queues(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rows = client.queues()
    print_rows(args, rows, ("QUEUE", "QUEUED", "CRITICAL/HIGH/NORMAL/LOW", "ACTIVE", "SCHEDULED",
                  "DEAD", "FINISHED"), [
        (q["name"], str(q["queued"]), "/".join(str(q["queuedByPriority"][level]) for level in
                                               ("critical", "high", "normal", "low")),
         str(q["active"]), str(q["scheduled"]), str(q["deadLettered"]),
         str(q["retainedFinished"])) for q in rows])
    return 0


def dlq_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rows = client.raw_list(
            "deadLetters", {"first": args.limit, "queue": args.queue, "function": args.function,
                            "errorContains": args.error},
            "$first: Int, $queue: String, $function: String, $errorContains: String")
    print_rows(args, rows, ("ID", "FUNCTION", "ATTEMPTS", "ERROR"), [
        (j["id"], j["function"], str(j["attempts"]), j["error"] or "") for j in rows])
    return 0


def dlq_action(mutation: str, verb: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if bool(args.ids) == bool(args.all):
            print(f"taskmaster: name the dead letters to {verb.rstrip('d')}, or pass --all"
                  " (with --queue/--function/--error to narrow it)", file=sys.stderr)
            return EXIT_INVALID_ARGUMENT
        flt = None
        if args.all:
            flt = {k: v for k, v in (("queue", args.queue), ("function", args.function),
                                     ("errorContains", args.error)) if v is not None}
        with connect(args) as client:
            count = client.dead_letter_action(mutation, args.ids or None, flt)
        print(json.dumps({verb: count}) if args.json else f"{verb} {count} dead letter(s)")
        return 0

    return run
