"""The HTTP/WebSocket API: Litestar app, GraphQL schema, GraphiQL."""
