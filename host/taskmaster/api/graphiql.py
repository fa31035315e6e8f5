"""GraphiQL served offline: Strawberry's page with its CDN assets swapped for ours."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from strawberry.http.ides import get_graphql_ide_html

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
STATIC_PATH = "/static/graphiql"

# The vendored files are byte-identical to these npm releases, so the page's SRI
# integrity attributes still hold.
_CDN_TO_LOCAL = {
    "https://unpkg.com/react@18.2.0/umd/react.production.min.js": "react.production.min.js",
    "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js":
        "react-dom.production.min.js",
    "https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js": "js.cookie.min.js",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.css": "graphiql.min.css",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css": "plugin-explorer.css",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.js": "graphiql.min.js",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js":
        "plugin-explorer.umd.js",
}


@cache
def offline_graphiql_html() -> str:
    html = get_graphql_ide_html("graphiql")
    for cdn, local in _CDN_TO_LOCAL.items():
        if cdn not in html:
            raise RuntimeError(f"Strawberry's GraphiQL page no longer loads {cdn}; re-vendor")
        html = html.replace(cdn, f"{STATIC_PATH}/{local}")
    return html
