"""Walking the app's routes (for metrics labels, the Allow header and the permission test)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi import routing as fastapi_routing

_PARAM = re.compile(r"\{[^}/]+\}")


def iter_routes(app: FastAPI) -> Iterator[tuple[str, frozenset[str], Any]]:
    """Every route as (full path template, methods, the route as declared).

    Newer FastAPI keeps included routers nested (``iter_route_contexts`` flattens them);
    older versions flatten ``app.routes`` themselves.
    """
    flatten = getattr(fastapi_routing, "iter_route_contexts", None)
    items: Any = flatten(app.routes) if flatten is not None else app.routes
    for item in items:
        route = getattr(item, "original_route", item)
        path = str(getattr(item, "path_format", None) or getattr(item, "path", ""))
        methods = frozenset(getattr(item, "methods", None) or ())
        yield path, methods, route


def _template_regex(template: str) -> re.Pattern[str]:
    parts = _PARAM.split(template)
    return re.compile("^" + "[^/]+".join(re.escape(p) for p in parts) + "$")


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods some route serves at ``path`` (for a 405's ``Allow`` header)."""
    table: list[tuple[int, re.Pattern[str], frozenset[str]]] | None = getattr(
        app.state, "allow_table", None
    )
    if table is None:
        table = [(len(_PARAM.findall(t)), _template_regex(t), m) for t, m, _ in iter_routes(app)]
        app.state.allow_table = table
    # The most specific templates win: /orders/validate is not /orders/{order_id}.
    matches = [(n, m) for n, pattern, m in table if pattern.match(path)]
    if not matches:
        return []
    fewest = min(n for n, _ in matches)
    return sorted(set().union(*(m for n, m in matches if n == fewest)))
