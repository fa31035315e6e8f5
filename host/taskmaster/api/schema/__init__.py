"""The GraphQL schema, split by construct: types, queries, mutations."""

from __future__ import annotations

import strawberry
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter

from taskmaster.api.document_cache import DocumentCache
from taskmaster.api.errors import ErrorCodes, TaskmasterSchema
from taskmaster.api.schema.mutations import Mutation
from taskmaster.api.schema.queries import Query
from taskmaster.api.schema.subscriptions import Subscription

MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 5000


def create_schema() -> strawberry.Schema:
    # The limiters' rule classes are built once (each limiter builds a class when it is
    # made); every request gets a fresh, cheap extension applying them.
    limits = [*QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
              *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules]
    return TaskmasterSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # Factories, not instances: each request gets fresh extension state.
        extensions=[
            lambda: DocumentCache(rules=limits, max_tokens=MAX_TOKENS),
            ErrorCodes,
        ],
    )


def schema_sdl() -> str:
    """The SDL exactly as served, as kept in graphql/schema.graphql."""
    return create_schema().as_str() + "\n"
