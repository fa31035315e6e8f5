"""The HTTP edges of POST /graphql.

Plain JSON POSTs take the API's fast path (api/fast_path.py); everything else must reach
Strawberry's Litestar view with its body intact and get the same answer as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from taskmaster.settings import ApiSettings
from tests.fixtures.server import Server

TYPENAME = b'{"query": "{ __typename }"}'


def post(server: Server, content: bytes | Iterator[bytes], **headers: str) -> httpx.Response:
    return httpx.post(server.graphql_url, content=content, timeout=30,
                      headers={"Content-Type": "application/json", **headers})


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{nope", 400, "Unable to parse request body as JSON"),
    (b'{"query": "{ __typename }", "variables": [1]}', 400, "`variables` must be an object"),
    (b'[{"query": "{ __typename }"}]', 400, "Batching is not enabled"),
    (b'{"variables": {}}', 400, "No GraphQL query found"),
    (b'{"query": "query A { __typename }", "operationName": "B"}', 400,
     'Unknown operation named "B"'),
    (b'{"query": "subscription { jobUpdates(id: \\"default:x\\") { id } }"}', 400,
     "subscriptions are served over WebSocket"),
])
def test_bad_requests_get_a_clear_http_error(server: Server, body: bytes, status: int,
                                             message: str) -> None:
    response = post(server, body)
    assert (response.status_code, message in response.text) == (status, True), response.text


def test_subscriptions_over_post_point_to_the_websocket(server: Server) -> None:
    response = post(server, b'{"query": "subscription { jobUpdates(id: \\"default:x\\") { id } }"}',
                    Accept='multipart/mixed;subscriptionSpec="1.0", application/json')
    assert response.status_code == 400
    assert "WebSocket" in response.text


def test_other_content_types_are_refused(server: Server) -> None:
    response = httpx.post(server.graphql_url, data={"query": "{ __typename }"}, timeout=30)
    assert response.status_code == 400
    assert "Unsupported content type" in response.text


def test_a_body_over_the_limit_is_refused_unread(server: Server) -> None:
    padding = b" " * (ApiSettings().max_body_bytes + 1)
    response = post(server, TYPENAME[:-1] + padding + b"}")
    assert response.status_code == 413


def test_a_chunked_body_and_a_charset_are_understood(server: Server) -> None:
    response = post(server, iter([TYPENAME[:10], TYPENAME[10:]]),
                    **{"Content-Type": "application/json; charset=utf-8"})
    assert "content-length" not in response.request.headers  # it was sent chunked
    assert response.json() == {"data": {"__typename": "Query"}}


def test_a_chunked_body_over_the_limit_is_refused(server: Server) -> None:
    chunk = b" " * 65536
    chunks = ApiSettings().max_body_bytes // len(chunk) + 2
    response = post(server, iter([TYPENAME[:-1], *[chunk] * chunks, b"}"]))
    assert response.status_code == 413


def test_errors_keep_their_codes_and_json_shape(server: Server) -> None:
    response = post(server, b'{"query": "{ job(id: \\"default:nope\\") { id } }"}')
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["data"] == {"job": None}
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_the_first_content_type_decides_as_in_litestar(server: Server) -> None:
    response = httpx.post(server.graphql_url, content=TYPENAME, timeout=30, headers=[
        ("Content-Type", "text/plain"), ("Content-Type", "application/json")])
    assert response.status_code == 400
    assert "Unsupported content type" in response.text


def test_a_body_nested_too_deep_is_answered_and_the_server_goes_on(server: Server) -> None:
    deep = b'{"query": "{ __typename }", "variables": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    response = post(server, deep)
    assert response.status_code in (400, 500)
    assert response.headers["content-type"].startswith("application/json"), response.text
    assert post(server, TYPENAME).json() == {"data": {"__typename": "Query"}}
