"""The `taskmaster` command. Thin: parses flags, calls the parts, maps errors to exits."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskmaster import __version__
from taskmaster.errors import JobFailedError, ServerUnavailableError, TaskmasterError
from taskmaster.settings import Settings, load_settings

if TYPE_CHECKING:
    from taskmaster.client import Client

logger = logging.getLogger("taskmaster")

EXIT_CODES = {
    "JOB_FAILED": 1,
    "CONFIG": 2,
    "INVALID_PAYLOAD": 2,
    "INVALID_ARGUMENT": 2,
    "UNKNOWN_FUNCTION": 2,
    "PLUGIN_LOAD": 2,
    "GRAPHQL_VALIDATION_FAILED": 2,
    "STORE_UNAVAILABLE": 3,
    "SERVER_UNAVAILABLE": 3,
    "NOT_FOUND": 4,
    "CONFLICT": 5,
}
"""Error code → process exit status; anything else exits with 1."""
PRIORITIES = ["CRITICAL", "HIGH", "NORMAL", "LOW"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SAQ logs every job at INFO; that is our history's job, not the log's.
    logging.getLogger("saq").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except TaskmasterError as exc:
        print(f"taskmaster: {exc.message}", file=sys.stderr)
        return EXIT_CODES.get(exc.code, 1)
    except KeyboardInterrupt:
        return 130


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(config_file=args.config, overrides=overrides)


# --- commands ---
def _serve(args: argparse.Namespace) -> int:
    from taskmaster.supervisor import serve

    settings = _settings(args, **{
        "api.host": args.host, "api.port": args.port, "data_dir": args.data_dir,
        "redis_url": args.redis_url, "worker.processes": args.workers})
    serve(settings, config_file=args.config)
    return 0


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from taskmaster.api.app import check_listen_address, create_app
    from taskmaster.registry.live import broadcast_on_sighup

    settings = _settings(args, **{"api.host": args.host, "api.port": args.port,
                                  "redis_url": args.redis_url})
    check_listen_address(settings)
    if settings.redis_url:
        broadcast_on_sighup(settings.redis_url, "taskmaster api")
    uvicorn.run(create_app(settings), host=settings.api.host, port=settings.api.port,
                access_log=False, log_config=None)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from taskmaster.worker_process import run_worker

    settings = _settings(args, **{"redis_url": args.redis_url,
                                  "worker.concurrency": args.concurrency,
                                  "worker.queues": tuple(args.queue) if args.queue else None})
    asyncio.run(run_worker(settings))
    return 0


def _functions_list(args: argparse.Namespace) -> int:
    if not args.local:
        with _client(args) as client:
            try:
                functions = client.functions()
            except ServerUnavailableError as exc:
                print(f"taskmaster: {exc.message}\nshowing this environment instead"
                      " (--local)", file=sys.stderr)
            else:
                return _print_functions(args, functions)
    return _functions_local(args)


def _print_functions(args: argparse.Namespace, functions: list[dict[str, Any]]) -> int:
    if args.json:
        print(json.dumps(functions, indent=2))
        return 0
    _print_table(("FUNCTION", "PLUGIN", "VERSION", "QUEUE", "STATE", "WORKERS"), [
        (f["name"], f["plugin"], f["version"], f["queue"], f["state"],
         ", ".join(f"{w['worker']}={w['version'] or '-'}" for w in f["workers"]) or "-")
        for f in functions])
    errors = {(f["plugin"], f["loadError"]) for f in functions if f["loadError"]}
    for plugin, error in sorted(errors):
        print(f"taskmaster: {plugin}: {error}", file=sys.stderr)
    return EXIT_CODES["PLUGIN_LOAD"] if errors else 0


def _functions_reload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.reload()
    return _print_reload(args, result)


def _print_reload(args: argparse.Namespace, result: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if result["converged"] and not result["rejected"] else 1
    for label in ("loaded", "unloaded", "rejected"):
        for item in result[label]:
            print(f"{label}: {item}")
    for worker in result["workers"]:
        versions = ", ".join(f"{v['plugin']} {v['version']}" for v in worker["loadedVersions"])
        print(f"worker {worker['id']} (pid {worker['pid']}): {versions or 'nothing'}")
    print("converged" if result["converged"] else "NOT converged: some workers run other"
          " versions (see `taskmaster functions list`)")
    return 0 if result["converged"] and not result["rejected"] else 1


def _functions_install(args: argparse.Namespace) -> int:
    from taskmaster.registry.install import pip_install

    print(pip_install(args.requirements, target=args.target).splitlines()[-1])
    return _reload_after_change(args)


def _functions_remove(args: argparse.Namespace) -> int:
    from taskmaster.registry.install import pip_remove

    print(pip_remove(args.name, target=args.target).splitlines()[-1])
    return _reload_after_change(args)


def _reload_after_change(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            result = client.reload()
        except ServerUnavailableError:
            print("no TaskMaster server answered; running hosts pick the change up when"
                  " they next scan (or on SIGHUP)", file=sys.stderr)
            return 0
    return _print_reload(args, result)


def _functions_local(args: argparse.Namespace) -> int:
    from taskmaster.registry import load_catalog

    catalog = load_catalog()
    if args.json:
        print(json.dumps([
            {"name": e.function.name, "plugin": e.plugin, "version": e.version,
             "queue": e.function.queue, "inputSchema": e.function.input_schema()}
            for e in catalog.entries()], indent=2))
    else:
        rows = [(e.function.name, e.plugin, e.version, e.function.queue)
                for e in catalog.entries()]
        _print_table(("FUNCTION", "PLUGIN", "VERSION", "QUEUE"), rows)
    failed = [p for p in catalog.plugins if not p.ok]
    for plugin in failed:
        print(f"taskmaster: plugin {plugin.name} {plugin.version} not loaded: {plugin.error}",
              file=sys.stderr)
    return EXIT_CODES["PLUGIN_LOAD"] if failed else 0


def _submit(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        print(f"taskmaster: --payload is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_CODES["INVALID_PAYLOAD"]
    job_input: dict[str, Any] = {"function": args.function, "payload": payload}
    for key, value in (("priority", args.priority), ("queue", args.queue),
                       ("delaySeconds", args.delay), ("maxAttempts", args.max_attempts),
                       ("runAt", args.run_at), ("idempotencyKey", args.idempotency_key)):
        if value is not None:
            job_input[key] = value
    with _client(args) as client:
        job = client.raw_submit(job_input)
        if args.wait:
            client.wait(job["id"], args.timeout, on_update=_progress_bar(args))
            _end_progress_bar(args)
            job = client.raw_job(job["id"])
    print(json.dumps(job, indent=2))
    if args.wait and job["status"] != "COMPLETE":
        raise JobFailedError(
            f"job {job['id']} ended {job['status']} after {job['attempts']} attempt(s):"
            f" {job['error'] or 'no error recorded'}"
            if job["status"] in ("FAILED", "CANCELLED") else
            f"job {job['id']} is still {job['status']} after {args.timeout}s")
    return 0


def _job(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if getattr(args, "follow", False):
            client.wait(args.id, None, on_update=_progress_bar(args))
            _end_progress_bar(args)
        print(json.dumps(client.raw_job(args.id), indent=2))
    return 0


def _progress_bar(args: argparse.Namespace) -> Callable[[Any], None]:
    """Draw the job's progress on stderr while it runs (only on a terminal)."""
    def draw(job: Any) -> None:
        if args.json or not sys.stderr.isatty():
            return
        fraction = job.progress or 0.0
        filled = int(fraction * 30)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%}"
                         f" {job.status:<9} attempt {job.attempts}/{job.max_attempts}")
        sys.stderr.flush()

    return draw


def _end_progress_bar(args: argparse.Namespace) -> None:
    if not args.json and sys.stderr.isatty():
        sys.stderr.write("\n")


def _job_action(mutation: str, **arguments: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        extra = {k: getattr(args, v) for k, v in arguments.items()}
        with _client(args) as client:
            print(json.dumps(client.act(mutation, args.id, **extra), indent=2))
        return 0

    return run


def _jobs(args: argparse.Namespace) -> int:
    flt = {k: v for k, v in (("status", args.status), ("queue", args.queue),
                             ("function", args.function)) if v is not None}
    with _client(args) as client:
        rows = client.raw_list("jobs", {"filter": flt, "first": args.limit},
                               "$filter: JobFilter, $first: Int")
    _print_rows(args, rows, ("ID", "FUNCTION", "STATUS", "PRIORITY", "ATTEMPTS", "ERROR"), [
        (j["id"], j["function"], j["status"], j["priority"],
         f"{j['attempts']}/{j['maxAttempts']}", j["error"] or "") for j in rows])
    return 0


def _workers(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = client.workers()
    _print_rows(args, rows, ("WORKER", "HOST", "PID", "QUEUES", "RUNNING", "VERSIONS",
                             "HEARTBEAT"), [
        (w["id"], w["host"], str(w["pid"]),
         " ".join(f"{c['queue']}={c['concurrency']}" for c in w["concurrency"]),
         str(w["runningJobs"]),
         " ".join(f"{v['plugin']}={v['version']}" for v in w["loadedVersions"]),
         w["lastHeartbeat"]) for w in rows])
    return 0


def _top(args: argparse.Namespace) -> int:
    """A live view of queues and workers, redrawn every --interval seconds."""
    with _client(args) as client:
        while True:
            queues, workers = client.queues(), client.workers()
            if args.json:
                print(json.dumps({"queues": queues, "workers": workers}))
            else:
                if not args.once:
                    sys.stdout.write("\x1b[2J\x1b[H")  # clear the terminal
                print(f"taskmaster top — {len(workers)} worker(s)"
                      f" — {time.strftime('%H:%M:%S')}")
                _print_table(("QUEUE", "QUEUED", "ACTIVE", "SCHEDULED", "DEAD", "DONE/MIN",
                              "FAILED/MIN", "WAIT P50/P99 MS"), [
                    (q["name"], str(q["queued"]), str(q["active"]), str(q["scheduled"]),
                     str(q["deadLettered"]), str(q["completedPerMinute"]),
                     str(q["failedPerMinute"]),
                     f"{_ms(q['waitP50Ms'])}/{_ms(q['waitP99Ms'])}") for q in queues])
            sys.stdout.flush()
            if args.once:
                return 0
            time.sleep(args.interval)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _print_rows(args: argparse.Namespace, raw: Any, header: tuple[str, ...],
                rows: Sequence[tuple[str, ...]]) -> None:
    if args.json:
        print(json.dumps(raw, indent=2))
    else:
        _print_table(header, rows)


def _queues(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = client.queues()
    _print_rows(args, rows, ("QUEUE", "QUEUED", "CRITICAL/HIGH/NORMAL/LOW", "ACTIVE", "SCHEDULED",
                  "DEAD", "FINISHED"), [
        (q["name"], str(q["queued"]), "/".join(str(q["queuedByPriority"][level]) for level in
                                               ("critical", "high", "normal", "low")),
         str(q["active"]), str(q["scheduled"]), str(q["deadLettered"]),
         str(q["retainedFinished"])) for q in rows])
    return 0


def _dlq_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = client.raw_list(
            "deadLetters", {"first": args.limit, "queue": args.queue, "function": args.function,
                            "errorContains": args.error},
            "$first: Int, $queue: String, $function: String, $errorContains: String")
    _print_rows(args, rows, ("ID", "FUNCTION", "ATTEMPTS", "ERROR"), [
        (j["id"], j["function"], str(j["attempts"]), j["error"] or "") for j in rows])
    return 0


def _dlq_action(mutation: str, verb: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if bool(args.ids) == bool(args.all):
            print(f"taskmaster: name the dead letters to {verb.rstrip('d')}, or pass --all"
                  " (with --queue/--function/--error to narrow it)", file=sys.stderr)
            return EXIT_CODES["INVALID_ARGUMENT"]
        flt = None
        if args.all:
            flt = {k: v for k, v in (("queue", args.queue), ("function", args.function),
                                     ("errorContains", args.error)) if v is not None}
        with _client(args) as client:
            count = client.dead_letter_action(mutation, args.ids or None, flt)
        print(json.dumps({verb: count}) if args.json else f"{verb} {count} dead letter(s)")
        return 0

    return run


def _client(args: argparse.Namespace) -> Client:
    from taskmaster.client import Client

    return Client(_server_url(args))


def _schema(args: argparse.Namespace) -> int:
    from taskmaster.api.schema import schema_sdl

    sys.stdout.write(schema_sdl())
    return 0


def _server_url(args: argparse.Namespace) -> str:
    return args.url or _settings(args).server_url


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# --- parser ---
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskmaster", description=(
        "Host job functions from pip packages, driven through GraphQL."))
    parser.add_argument("--version", action="version", version=f"taskmaster {__version__}")
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")

    def command(name: str, run: Callable[[argparse.Namespace], int], help: str
                ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, parents=[common])
        sub.set_defaults(command=run)
        return sub

    serve = command("serve", _serve, "run the API, worker processes and (without"
                    " --redis-url) an embedded Valkey, until Ctrl-C/SIGTERM")
    _add_listen(serve)
    serve.add_argument("--data-dir", type=Path, help="embedded store's data (./.taskmaster)")
    serve.add_argument("--redis-url", help="use this Redis/Valkey instead of the embedded one")
    serve.add_argument("--workers", type=int, help="worker processes (default: one per CPU)")

    api = command("api", _api, "run only the API process")
    _add_listen(api)
    api.add_argument("--redis-url", help="the store (or TASKMASTER_REDIS_URL)")

    worker = command("worker", _worker, "run one worker process")
    worker.add_argument("--redis-url", help="the store (or TASKMASTER_REDIS_URL)")
    worker.add_argument("--concurrency", type=int, help="jobs at once per queue (10)")
    worker.add_argument("--queue", action="append", metavar="NAME[=CONCURRENCY]",
                        help="serve this queue (repeatable; default: all of the functions')")

    functions = command("functions", lambda a: 0, "inspect, install, upgrade and remove"
                        " function packages on a running host")
    function_commands = functions.add_subparsers(required=True, metavar="ACTION")
    listing = function_commands.add_parser(
        "list", help="functions with their state and the version each worker runs",
        parents=[common])
    listing.add_argument("--local", action="store_true",
                         help="what this environment has installed, without a server")
    _add_url(listing)
    listing.set_defaults(command=_functions_list)
    reload = function_commands.add_parser(
        "reload", help="drain and reload changed functions in every host process",
        parents=[common])
    _add_url(reload)
    reload.set_defaults(command=_functions_reload)
    install = function_commands.add_parser(
        "install", help="pip-install function packages here, then reload the host",
        parents=[common])
    install.add_argument("requirements", nargs="+", metavar="REQUIREMENT")
    install.add_argument("--target", help="install into this directory on the host's path")
    _add_url(install)
    install.set_defaults(command=_functions_install)
    remove = function_commands.add_parser(
        "remove", help="uninstall a function package, then reload the host",
        parents=[common])
    remove.add_argument("name")
    remove.add_argument("--target", help="the directory it was installed into")
    _add_url(remove)
    remove.set_defaults(command=_functions_remove)

    submit = command("submit", _submit, "submit a job through the API")
    submit.add_argument("function", help="job type, e.g. demo.echo")
    submit.add_argument("--payload", default="{}", help="JSON payload (default {})")
    submit.add_argument("--priority", type=str.upper, choices=PRIORITIES)
    submit.add_argument("--queue", help="override the function's queue")
    submit.add_argument("--delay", type=float, metavar="SECONDS", help="start no sooner")
    submit.add_argument("--max-attempts", type=int, help="attempts in total")
    submit.add_argument("--wait", action="store_true",
                        help="wait for the end; exit 1 unless it completes")
    submit.add_argument("--timeout", type=float, metavar="SECONDS", help="limit --wait")
    _add_url(submit)

    submit.add_argument("--run-at", metavar="ISO-8601", help="start no sooner than this time")
    submit.add_argument("--idempotency-key", help="submit at most once per key and queue")

    job = command("job", _job, "show a job with its history")
    job.add_argument("id")
    job.add_argument("--follow", action="store_true",
                     help="show its progress until it ends, then the job")
    _add_url(job)

    for name, mutation, text in (("cancel", "cancelJob", "cancel a job"),
                                 ("retry", "retryJob", "run a FAILED or CANCELLED job again")):
        action = command(name, _job_action(mutation), text)
        action.add_argument("id")
        _add_url(action)
    priority = command("priority", _job_action("setJobPriority", priority="level"),
                       "move a waiting job to another priority")
    priority.add_argument("id")
    priority.add_argument("level", type=str.upper, choices=PRIORITIES)
    _add_url(priority)

    jobs = command("jobs", _jobs, "list jobs, newest first")
    jobs.add_argument("--status", type=str.upper, choices=[
        "QUEUED", "SCHEDULED", "ACTIVE", "COMPLETE", "FAILED", "CANCELLED"])
    jobs.add_argument("--queue")
    jobs.add_argument("--function")
    jobs.add_argument("--limit", type=int, default=50)
    _add_url(jobs)

    queues = command("queues", _queues, "queue depths")
    _add_url(queues)

    workers = command("workers", _workers, "live worker processes and what they run")
    _add_url(workers)

    top = command("top", _top, "a live view of queues and workers (Ctrl-C to leave)")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
    top.add_argument("--once", action="store_true", help="draw once and exit")
    _add_url(top)

    dlq = command("dlq", lambda a: 0, "the dead-letter queue: jobs whose last attempt failed")
    dlq_commands = dlq.add_subparsers(required=True, metavar="ACTION")
    listing = dlq_commands.add_parser("list", help="list dead letters, newest first",
                                      parents=[common])
    _add_dlq_filters(listing)
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(command=_dlq_list)
    show = dlq_commands.add_parser("show", help="one dead letter with every attempt",
                                   parents=[common])
    show.add_argument("id")
    _add_url(show)
    show.set_defaults(command=_job)
    for verb, mutation, past in (("replay", "replayDeadLetters", "replayed"),
                                 ("purge", "purgeDeadLetters", "purged")):
        action = dlq_commands.add_parser(verb, help=f"{verb} dead letters by id or with --all",
                                         parents=[common])
        action.add_argument("ids", nargs="*", metavar="ID")
        action.add_argument("--all", action="store_true", help="every (filtered) dead letter")
        _add_dlq_filters(action)
        action.set_defaults(command=_dlq_action(mutation, past))

    command("schema", _schema, "print the GraphQL schema (SDL)")
    return parser


def _add_listen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (8000)")


def _add_dlq_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue")
    parser.add_argument("--function")
    parser.add_argument("--error", metavar="TEXT", help="part of the last error")
    _add_url(parser)


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="GraphQL endpoint (http://127.0.0.1:8000/graphql)")
