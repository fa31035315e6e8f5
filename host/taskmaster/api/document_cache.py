"""DocumentCache: the limits a document must pass (tokens, depth, aliases), and a cache of
the query texts that passed them, so a text that parsed and validated once is not parsed
or validated again. Validation is most of a small request's cost (graphql-core visits the
document once per rule); clients send the same few operations over and over.

Only documents without errors are kept, so every error is still produced by the normal
path (with its code, see errors.py). The limits and the cache are one extension because a
cached document is one that passed the limits, and because Strawberry looks up each
extension's hooks on every request (four extensions cost more than the cache saves).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from weakref import WeakKeyDictionary

from strawberry.extensions import SchemaExtension

from graphql import ASTValidationRule, DocumentNode

MAX_DOCUMENTS = 256

_caches: WeakKeyDictionary[object, OrderedDict[str, DocumentNode]] = WeakKeyDictionary()
"""Per schema: a document valid for one schema says nothing about another."""


def _documents(schema: object) -> OrderedDict[str, DocumentNode]:
    cache = _caches.get(schema)
    if cache is None:
        cache = _caches[schema] = OrderedDict()
    return cache


def validated_document(schema: object, query: str) -> DocumentNode | None:
    """The document of this text if it passed validation and the limits for this schema."""
    return _documents(schema).get(query)


class DocumentCache(SchemaExtension):
    _hit = False

    def __init__(self, *, rules: Sequence[type[ASTValidationRule]],
                 max_tokens: int) -> None:
        super().__init__()
        self.rules = tuple(rules)
        self.max_tokens = max_tokens

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.validation_rules = (*context.validation_rules, *self.rules)
        context.parse_options["max_tokens"] = self.max_tokens
        yield

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        documents = _documents(context.schema)
        document = documents.get(context.query) if context.query else None
        if document is not None:
            documents.move_to_end(context.query)  # type: ignore[arg-type]
            context.graphql_document = document  # Strawberry then skips parsing
            self._hit = True
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if self._hit:
            context.pre_execution_errors = []  # Strawberry then skips validation
        yield
        if not self._hit and context.query and context.graphql_document is not None \
                and context.pre_execution_errors == []:
            documents = _documents(context.schema)
            documents[context.query] = context.graphql_document
            while len(documents) > MAX_DOCUMENTS:
                documents.popitem(last=False)
