"""create_app(settings): the Litestar application serving GraphQL and GraphiQL, behind the
fast path for plain JSON POSTs."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Response, get
from litestar.background_tasks import BackgroundTasks
from litestar.datastructures import State
from litestar.di import Provide
from litestar.static_files import create_static_files_router
from redis.exceptions import RedisError
from strawberry.litestar import make_graphql_controller
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from taskmaster.aio import freeze_startup_heap
from taskmaster.api.fast_path import ASGIApp, JsonPostFastPath
from taskmaster.api.graphiql import STATIC_DIR, STATIC_PATH, offline_graphiql_html
from taskmaster.api.prometheus import exposition
from taskmaster.api.schema import create_schema
from taskmaster.api.services import Services
from taskmaster.engine.events import EventHub
from taskmaster.engine.jobs import JobClient, Retention
from taskmaster.errors import ConfigError
from taskmaster.registry import load_catalog
from taskmaster.registry.live import LiveFunctions
from taskmaster.settings import Settings
from taskmaster.store.connection import check_store, create_redis

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_listen_address(settings: Settings) -> None:
    """Refuse, before anything starts, an address the API could not or must not use.

    Without API keys (DESIGN §7) the API may only listen on loopback.
    """
    host, port = settings.api.host, settings.api.port
    if host not in LOOPBACK:
        raise ConfigError(f"refusing to bind {host}: without API keys the"
                          " API only listens on loopback (127.0.0.1, ::1)")
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # uvicorn binds with SO_REUSEADDR too; match it so TIME_WAIT is no obstacle.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror});"
                              " pass another --port") from None


def _empty_response() -> Response[Any]:
    return Response({}, background=BackgroundTasks([]))


def create_app(settings: Settings) -> ASGIApp:
    """Build the API; it connects to the store and loads the catalog on startup."""
    if not settings.redis_url:
        raise ConfigError("the API needs the store's URL: pass --redis-url or set"
                          " TASKMASTER_REDIS_URL (`taskmaster serve` does this for you)")
    redis_url = settings.redis_url

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        redis = create_redis(redis_url)
        jobs = JobClient(redis, retention=Retention(
            keep_completed_s=settings.jobs.keep_completed_s,
            keep_dead_s=settings.jobs.keep_dead_s))
        catalog = load_catalog()
        live = LiveFunctions(catalog, redis, settings.reload, role="api",
                             process_id=f"api-{uuid.uuid4().hex[:12]}")
        hub = EventHub(jobs, known_queues=lambda: catalog.queues() | {"default"})
        try:
            await check_store(redis, redis_url)
            await live.start()
            hub.start()
            app.state.services = Services(settings=settings, redis=redis, catalog=catalog,
                                          jobs=jobs, live=live, hub=hub)
            freeze_startup_heap()
            yield
        finally:
            await hub.stop()
            await live.stop()
            await jobs.close()
            await redis.aclose()

    async def graphql_context(state: State) -> dict[str, Any]:
        return {"services": state.services}

    schema = create_schema()
    base = make_graphql_controller(
        schema,
        path="/graphql",
        context_getter=graphql_context,
        graphql_ide="graphiql" if settings.api.graphiql else None,
        # Only the current protocol: the legacy one had auth-bypass CVEs.
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
    )

    class GraphQLController(base):  # type: ignore[valid-type, misc]
        # strawberry 0.341 builds each request's (empty) Response in a worker thread
        # (sync_to_thread=True): a thread hop per request for nothing. Build it inline.
        dependencies = {**base.dependencies,  # noqa: RUF012 - Litestar's class attribute
                        "response": Provide(_empty_response, sync_to_thread=False)}

        @property
        def graphql_ide_html(self) -> str:
            return offline_graphiql_html()

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @get("/readyz")
    async def readyz(state: State) -> Response[dict[str, Any]]:
        """The store answers and functions are loaded: ready for traffic."""
        services: Services = state.services
        problems = []
        try:
            await services.redis.ping()  # type: ignore[misc]
        except RedisError as exc:
            problems.append(f"store unreachable: {exc}")
        if not services.catalog.entries():
            problems.append("no functions loaded")
        body = {"status": "ready" if not problems else "not ready", "problems": problems}
        return Response(body, status_code=200 if not problems else 503)

    @get("/metrics", media_type="text/plain; version=0.0.4; charset=utf-8")
    async def prometheus_metrics(state: State) -> str:
        return await exposition(state.services.jobs)

    handlers: list[Any] = [GraphQLController, healthz, readyz, prometheus_metrics]
    if settings.api.graphiql:
        handlers.append(create_static_files_router(path=STATIC_PATH, directories=[STATIC_DIR]))
    app = Litestar(route_handlers=handlers, lifespan=[lifespan],
                   request_max_body_size=settings.api.max_body_bytes,
                   logging_config=None)

    def fast_context() -> dict[str, Any] | None:
        services = getattr(app.state, "services", None)
        return None if services is None else {"services": services}

    return JsonPostFastPath(app, schema, path="/graphql",  # type: ignore[arg-type]
                            max_body_bytes=settings.api.max_body_bytes, context=fast_context)
