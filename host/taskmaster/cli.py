"""The `taskmaster` command. Thin: parses flags, calls the parts, maps errors to exits."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from taskmaster import __version__
from taskmaster.aio import run_fast
from taskmaster.commands import functions as functions_cmd
from taskmaster.commands import jobs as jobs_cmd
from taskmaster.commands import output
from taskmaster.errors import TaskmasterError

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


# --- commands ---
def _serve(args: argparse.Namespace) -> int:
    from taskmaster.supervisor import serve

    settings = output.settings(args, **{
        "api.host": args.host, "api.port": args.port, "data_dir": args.data_dir,
        "redis_url": args.redis_url, "worker.processes": args.workers})
    serve(settings, config_file=args.config)
    return 0


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from taskmaster.api.app import check_listen_address, create_app
    from taskmaster.registry.live import broadcast_on_sighup

    settings = output.settings(args, **{"api.host": args.host, "api.port": args.port,
                                  "redis_url": args.redis_url})
    check_listen_address(settings)
    if settings.redis_url:
        broadcast_on_sighup(settings.redis_url, "taskmaster api")
    uvicorn.run(create_app(settings), host=settings.api.host, port=settings.api.port,
                access_log=False, log_config=None)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from taskmaster.worker_process import run_worker

    settings = output.settings(args, **{"redis_url": args.redis_url,
                                  "worker.concurrency": args.concurrency,
                                  "worker.queues": tuple(args.queue) if args.queue else None})
    run_fast(run_worker(settings))
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json as json_module

    from taskmaster.bench import SCENARIOS, render, run_bench

    # The same loop drives both engines' clients.
    results = run_fast(run_bench(redis_url=args.redis_url, quick=args.quick,
                                 only=frozenset(args.only or SCENARIOS)))
    print(render(results))
    if args.output:
        args.output.write_text(json_module.dumps(results, indent=2))
    if args.json:
        print(json_module.dumps(results, indent=2))
    return 0


def _bench_scenario(name: str) -> str:
    from taskmaster.bench import SCENARIOS

    if name not in SCENARIOS:
        raise argparse.ArgumentTypeError(f"no scenario {name!r}; pick from"
                                         f" {', '.join(SCENARIOS)}")
    return name


def _schema(args: argparse.Namespace) -> int:
    from taskmaster.api.schema import schema_sdl

    sys.stdout.write(schema_sdl())
    return 0




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

    def command(name: str, run: Callable[[argparse.Namespace], int], help: str, *,
                group: bool = False) -> argparse.ArgumentParser:
        # A group's own --json would be silently overwritten by its action's default.
        sub = commands.add_parser(name, help=help, description=help,
                                  parents=[] if group else [common])
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
                        " function packages on a running host", group=True)
    function_commands = functions.add_subparsers(required=True, metavar="ACTION")
    listing = function_commands.add_parser(
        "list", help="functions with their state and the version each worker runs",
        parents=[common])
    listing.add_argument("--local", action="store_true",
                         help="what this environment has installed, without a server")
    _add_url(listing)
    listing.set_defaults(command=functions_cmd.functions_list)
    reload = function_commands.add_parser(
        "reload", help="drain and reload changed functions in every host process",
        parents=[common])
    _add_url(reload)
    reload.set_defaults(command=functions_cmd.functions_reload)
    install = function_commands.add_parser(
        "install", help="pip-install function packages here, then reload the host",
        parents=[common])
    install.add_argument("requirements", nargs="+", metavar="REQUIREMENT")
    install.add_argument("--target", help="install into this directory on the host's path")
    _add_url(install)
    install.set_defaults(command=functions_cmd.functions_install)
    remove = function_commands.add_parser(
        "remove", help="uninstall a function package, then reload the host",
        parents=[common])
    remove.add_argument("name")
    remove.add_argument("--target", help="the directory it was installed into")
    _add_url(remove)
    remove.set_defaults(command=functions_cmd.functions_remove)

    submit = command("submit", jobs_cmd.submit, "submit a job through the API")
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

    job = command("job", jobs_cmd.job, "show a job with its history")
    job.add_argument("id")
    job.add_argument("--follow", action="store_true",
                     help="show its progress until it ends, then the job")
    _add_url(job)

    for name, mutation, text in (("cancel", "cancelJob", "cancel a job"),
                                 ("retry", "retryJob", "run a FAILED or CANCELLED job again")):
        action = command(name, jobs_cmd.job_action(mutation), text)
        action.add_argument("id")
        _add_url(action)
    priority = command("priority", jobs_cmd.job_action("setJobPriority", priority="level"),
                       "move a waiting job to another priority")
    priority.add_argument("id")
    priority.add_argument("level", type=str.upper, choices=PRIORITIES)
    _add_url(priority)

    jobs = command("jobs", jobs_cmd.jobs, "list jobs, newest first")
    jobs.add_argument("--status", type=str.upper, choices=[
        "QUEUED", "SCHEDULED", "ACTIVE", "COMPLETE", "FAILED", "CANCELLED"])
    jobs.add_argument("--queue")
    jobs.add_argument("--function")
    jobs.add_argument("--limit", type=int, default=50)
    _add_url(jobs)

    queues = command("queues", jobs_cmd.queues, "queue depths")
    _add_url(queues)

    workers = command("workers", jobs_cmd.workers, "live worker processes and what they run")
    _add_url(workers)

    top = command("top", jobs_cmd.top, "a live view of queues and workers (Ctrl-C to leave)")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
    top.add_argument("--once", action="store_true", help="draw once and exit")
    _add_url(top)

    dlq = command("dlq", lambda a: 0, "the dead-letter queue: jobs whose last attempt failed",
                  group=True)
    dlq_commands = dlq.add_subparsers(required=True, metavar="ACTION")
    listing = dlq_commands.add_parser("list", help="list dead letters, newest first",
                                      parents=[common])
    _add_dlq_filters(listing)
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(command=jobs_cmd.dlq_list)
    show = dlq_commands.add_parser("show", help="one dead letter with every attempt",
                                   parents=[common])
    show.add_argument("id")
    _add_url(show)
    show.set_defaults(command=jobs_cmd.job)
    for verb, mutation, past in (("replay", "replayDeadLetters", "replayed"),
                                 ("purge", "purgeDeadLetters", "purged")):
        action = dlq_commands.add_parser(verb, help=f"{verb} dead letters by id or with --all",
                                         parents=[common])
        action.add_argument("ids", nargs="*", metavar="ID")
        action.add_argument("--all", action="store_true", help="every (filtered) dead letter")
        _add_dlq_filters(action)
        action.set_defaults(command=jobs_cmd.dlq_action(mutation, past))

    command("schema", _schema, "print the GraphQL schema (SDL)")

    bench = command("bench", _bench, "measure TaskMaster against raw SAQ on one Valkey")
    bench.add_argument("--redis-url", help="use this store instead of a fresh embedded one")
    bench.add_argument("--quick", action="store_true", help="a small run, under a minute")
    bench.add_argument("--output", type=Path, metavar="FILE", help="write the results as JSON")
    bench.add_argument("--only", action="append", type=_bench_scenario, metavar="SCENARIO",
                       help="run just this scenario (repeatable): enqueue, drain, latency,"
                       " graphql, subscribers, swap or memory")
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
