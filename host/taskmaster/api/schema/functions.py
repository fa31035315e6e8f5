"""GraphQL types for live functions: what each process runs, and reload results."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry
from strawberry.scalars import JSON

from taskmaster.api.schema.types import Priority
from taskmaster.registry import Catalog, CatalogEntry, ReloadOutcome
from taskmaster.registry import FunctionState as RegistryState
from taskmaster.registry.live import ProcessReport

FunctionState = strawberry.enum(RegistryState, description=(
    "ACTIVE: running new executions. DRAINING: a new version was found; running executions"
    " finish, new ones wait. LOADING: the new version is being imported. FAILED: not"
    " loadable."))


@strawberry.type(description="A plugin and the version a process runs.")
class PluginVersion:
    plugin: str
    version: str


@strawberry.type(description="What one worker process runs of a function.")
class FunctionWorker:
    worker: str
    host: str
    pid: int
    version: str | None
    state: FunctionState | None  # type: ignore[valid-type]


@strawberry.type(description="A job type that can be submitted.")
class FunctionInfo:
    name: str
    plugin: str = strawberry.field(description="Distribution that declares it.")
    version: str = strawberry.field(description="The version the API process has loaded.")
    queue: str
    priority: Priority  # type: ignore[valid-type]
    max_attempts: int
    timeout_seconds: float
    description: str
    state: FunctionState  # type: ignore[valid-type]
    load_error: str | None = strawberry.field(
        description="Why the newest installed version was refused (message and traceback);"
        " the version shown keeps serving.")
    input_schema: JSON = strawberry.field(description="JSON Schema of the payload.")
    workers: list[FunctionWorker] = strawberry.field(
        description="Each live worker process and the version of this function it runs.")

    @classmethod
    def of(cls, entry: CatalogEntry, catalog: Catalog,
           reports: list[ProcessReport]) -> FunctionInfo:
        f = entry.function
        return cls(
            name=f.name, plugin=entry.plugin, version=entry.version, queue=f.queue,
            priority=f.priority, max_attempts=f.max_attempts, timeout_seconds=f.timeout_s,
            description=f.description, state=catalog.state(f.name),
            load_error=catalog.load_error(entry.plugin), input_schema=JSON(f.input_schema()),
            workers=[FunctionWorker(
                worker=r.id, host=r.host, pid=r.pid, version=r.versions.get(entry.plugin),
                state=RegistryState(r.states[f.name]) if f.name in r.states else None)
                for r in reports if r.role == "worker"])


@strawberry.type(description="An installed function distribution.")
class PluginInfo:
    name: str
    version: str
    functions: list[str]
    load_error: str | None = strawberry.field(
        description="Why it (or its newest version) is not serving, if so.")

    @classmethod
    def of(cls, catalog: Catalog) -> list[PluginInfo]:
        return [cls(name=p.name, version=p.version,
                    functions=sorted(f.name for f in p.functions),
                    load_error=catalog.load_error(p.name)) for p in catalog.plugins]


@strawberry.type(description="How many jobs of a queue a worker runs at once.")
class QueueConcurrency:
    queue: str
    concurrency: int


@strawberry.type(description="A worker process, as it last reported (every few seconds).")
class WorkerInfo:
    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: list[QueueConcurrency]
    loaded_versions: list[PluginVersion]
    current_jobs: list[strawberry.ID]
    running_jobs: int
    load_errors: list[str]
    last_heartbeat: datetime

    @classmethod
    def of(cls, report: ProcessReport) -> WorkerInfo:
        return cls(id=report.id, host=report.host, pid=report.pid, queues=report.queues,
                   concurrency=[QueueConcurrency(queue=q, concurrency=c)
                                for q, c in sorted(report.concurrency.items())],
                   loaded_versions=[PluginVersion(plugin=p, version=v)
                                    for p, v in sorted(report.versions.items())],
                   current_jobs=[strawberry.ID(j) for j in report.current_jobs],
                   running_jobs=len(report.current_jobs),
                   load_errors=[f"{p}: {e}" for p, e in sorted(report.load_errors.items())],
                   last_heartbeat=datetime.fromtimestamp(report.heartbeat_ms / 1000, tz=UTC))


@strawberry.type(description="What a reload changed, and whether every worker caught up.")
class ReloadResult:
    converged: bool = strawberry.field(
        description="Every live worker process runs the versions the API loaded.")
    loaded: list[str]
    unloaded: list[str]
    rejected: list[str]
    functions: list[FunctionInfo]
    workers: list[WorkerInfo]

    @classmethod
    def of(cls, outcome: ReloadOutcome, converged: bool, catalog: Catalog,
           reports: list[ProcessReport]) -> ReloadResult:
        return cls(converged=converged, loaded=outcome.loaded, unloaded=outcome.unloaded,
                   rejected=[f"{name}: {error.splitlines()[0]}"
                             for name, error in outcome.rejected.items()],
                   functions=[FunctionInfo.of(e, catalog, reports) for e in catalog.entries()],
                   workers=[WorkerInfo.of(r) for r in reports if r.role == "worker"])
