"""GraphiQL served offline: Strawberry's page with its CDN assets swapped for ours."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from strawberry.http.ides import get_graphql_ide_html

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
STATIC_PATH = "/static/graphiql"

# The vendored files are byte-identical to these npm releases, so the page's SRI
# integrity attributes still hold. Keys are the package paths the page loads them from.
_VENDORED = {
    "react@18.2.0/umd/react.production.min.js": "react.production.min.js",
    "react-dom@18.2.0/umd/react-dom.production.min.js": "react-dom.production.min.js",
    "js-cookie@3.0.5/dist/js.cookie.min.js": "js.cookie.min.js",
    "graphiql@3.8.3/graphiql.min.css": "graphiql.min.css",
    "@graphiql/plugin-explorer@1.0.2/dist/style.css": "plugin-explorer.css",
    "graphiql@3.8.3/graphiql.min.js": "graphiql.min.js",
    "@graphiql/plugin-explorer@1.0.2/dist/index.umd.js": "plugin-explorer.umd.js",
}
_REMOTE = re.compile(r'(?:src|href)="(https://[^"]+)"')


@cache
def offline_graphiql_html() -> str:
    html = get_graphql_ide_html("graphiql")
    remote = _REMOTE.findall(html)
    for url in remote:
        package_path = url.split("/", 3)[3]
        if package_path not in _VENDORED:
            raise RuntimeError(f"Strawberry's GraphiQL page now loads {url}; vendor it")
        html = html.replace(url, f"{STATIC_PATH}/{_VENDORED[package_path]}")
    if len(remote) != len(_VENDORED):
        raise RuntimeError("Strawberry's GraphiQL page changed its assets; re-vendor them")
    return html
