"""create_app(settings): the Litestar application serving GraphQL and GraphiQL."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.static_files import create_static_files_router
from strawberry.litestar import make_graphql_controller
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from taskmaster.api.graphiql import STATIC_DIR, STATIC_PATH, offline_graphiql_html
from taskmaster.api.schema import create_schema
from taskmaster.api.services import Services
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


def create_app(settings: Settings) -> Litestar:
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
        try:
            await check_store(redis, redis_url)
            await live.start()
            app.state.services = Services(settings=settings, redis=redis, catalog=catalog,
                                          jobs=jobs, live=live)
            yield
        finally:
            await live.stop()
            await jobs.close()
            await redis.aclose()

    async def graphql_context(state: State) -> dict[str, Any]:
        return {"services": state.services}

    base = make_graphql_controller(
        create_schema(),
        path="/graphql",
        context_getter=graphql_context,
        graphql_ide="graphiql" if settings.api.graphiql else None,
        # Only the current protocol: the legacy one had auth-bypass CVEs.
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
    )

    class GraphQLController(base):  # type: ignore[valid-type, misc]
        @property
        def graphql_ide_html(self) -> str:
            return offline_graphiql_html()

    @get("/healthz")
    async def healthz(state: State) -> dict[str, str]:
        await state.services.redis.ping()
        return {"status": "ok"}

    handlers: list[Any] = [GraphQLController, healthz]
    if settings.api.graphiql:
        handlers.append(create_static_files_router(path=STATIC_PATH, directories=[STATIC_DIR]))
    return Litestar(route_handlers=handlers, lifespan=[lifespan],
                    request_max_body_size=settings.api.max_body_bytes,
                    logging_config=None)
