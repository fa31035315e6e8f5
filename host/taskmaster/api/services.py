"""Services: what the API's resolvers reach through the GraphQL context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import strawberry
from redis.asyncio import Redis

from taskmaster.engine.events import EventHub
from taskmaster.engine.jobs import JobClient
from taskmaster.registry import Catalog
from taskmaster.registry.live import LiveFunctions
from taskmaster.settings import Settings


@dataclass(frozen=True, kw_only=True)
class Services:
    settings: Settings
    redis: Redis
    catalog: Catalog
    jobs: JobClient
    live: LiveFunctions
    hub: EventHub


def services(info: strawberry.Info[dict[str, Any], None]) -> Services:
    found: Services = info.context["services"]
    return found
