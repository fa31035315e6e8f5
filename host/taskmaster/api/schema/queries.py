"""Query root."""

from __future__ import annotations

from typing import Any

import strawberry

from taskmaster.api.schema.types import FunctionInfo, Job, PluginInfo
from taskmaster.api.services import services

Info = strawberry.Info[dict[str, Any], None]


@strawberry.type
class Query:
    @strawberry.field(description="One job by id; a NOT_FOUND error if there is none.")
    async def job(self, info: Info, id: strawberry.ID) -> Job | None:
        return Job.of(await services(info).jobs.get(str(id)))

    @strawberry.field(description="Every job type this host can run.")
    def functions(self, info: Info) -> list[FunctionInfo]:
        return [FunctionInfo.of(entry) for entry in services(info).catalog.entries()]

    @strawberry.field(description="Installed function distributions, with load errors.")
    def plugins(self, info: Info) -> list[PluginInfo]:
        return [PluginInfo.of(plugin) for plugin in services(info).catalog.plugins]
