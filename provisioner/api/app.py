"""The FastAPI application: ``create_app(settings, inventory)``.

Layout: ``/api/v1/...`` for the resources (every route guarded by a permission; a query
parameter a route does not take is a 422), the OpenAPI document at ``/api/v1/openapi.json``
and its docs at ``/api/v1/docs`` (Swagger UI's files served from here, no CDN); ``/healthz``,
``/readyz`` and ``/metrics`` at the root, public, for probes and scrapers; the technician
page under ``/tech/`` (:mod:`provisioner.tech.pages`, its own session and CSRF checks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from provisioner import __version__
from provisioner.api import problems
from provisioner.api.limits import ApiLimits, BodyLimitMiddleware, RateLimiter
from provisioner.api.routes import (
    audit,
    blocks,
    devices,
    events,
    health,
    jobs,
    orders,
    push,
    resync,
)
from provisioner.api.routing import iter_routes
from provisioner.documents.document import OrderDocument
from provisioner.metrics import METRICS, Metrics
from provisioner.orders.service import OrdersService
from provisioner.settings import Settings

PREFIX = "/api/v1"
# Label values must stay few: any other method a client invents is counted as "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Count requests and time them by route template (not raw path: bounded label values)."""

    def __init__(self, app: ASGIApp, registry: Metrics, templates: Callable[[], dict[Any, str]]):
        self.app = app
        self.registry = registry
        self._templates = templates
        self._by_endpoint: dict[Any, str] | None = None

    def _template(self, scope: Scope) -> str:
        if self._by_endpoint is None:
            self._by_endpoint = self._templates()
        endpoint = scope.get("endpoint")
        if endpoint is not None and endpoint in self._by_endpoint:
            return self._by_endpoint[endpoint]
        return getattr(scope.get("route"), "path", None) or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            method = str(scope["method"])
            labels = {
                "route": self._template(scope),
                "method": method if method in _METHODS else "other",
                "status": str(status),
            }
            self.registry.requests.labels(**labels).inc()
            self.registry.latency.labels(**labels).observe(time.perf_counter() - start)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document plus the order document and problem schemas it refers to."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    doc = OrderDocument.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in doc.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components["OrderDocument"] = doc
    for model in (problems.Problem, problems.Violation):
        sub = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, inner in sub.pop("$defs", {}).items():
            components.setdefault(name, inner)
        components[model.__name__] = sub
    app.openapi_schema = schema
    return schema


def _known_query(route: Any) -> frozenset[str]:
    known: frozenset[str] | None = getattr(route, "_known_query", None)
    if known is None:
        names: set[str] = set()
        todo = [getattr(route, "dependant", None)]
        while todo:  # the route's own query parameters and its dependencies'
            dependant = todo.pop()
            if dependant is None:
                continue
            names.update(p.alias for p in dependant.query_params)
            todo.extend(dependant.dependencies)
        known = frozenset(names)
        route._known_query = known
    return known


def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not take: ``?q=Rossi`` on a listing that has
    no ``q`` must not quietly answer with everything."""
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    known = _known_query(route)
    unknown = sorted(set(request.query_params.keys()) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name[:40]),
                    "msg": f"unknown query parameter (this route takes: {takes})",
                }
                for name in unknown[:20]
            ]
        )


# Swagger UI's files, served from the fastapi-offline package: nothing is fetched from a CDN,
# so the docs work on an isolated NOC network.
_DOCS_ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}


def _docs_router() -> APIRouter:
    import fastapi_offline

    root = Path(fastapi_offline.__file__).parent / "static"
    router = APIRouter(include_in_schema=False)

    @router.get(f"{PREFIX}/docs")
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{PREFIX}/openapi.json",
            title="Office Smart provisioner - API docs",
            swagger_js_url=f"{PREFIX}/docs/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{PREFIX}/docs/assets/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/docs/assets/favicon.png",
        )

    @router.get(PREFIX + "/docs/assets/{name}")
    def docs_asset(name: str) -> FileResponse:
        if name not in _DOCS_ASSETS:
            raise HTTPException(404, "not found")
        return FileResponse(
            root / name,
            media_type=_DOCS_ASSETS[name],
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return router


def create_app(
    settings: Settings,
    inventory: OrdersService | None = None,
    limits: ApiLimits | None = None,
    *,
    tech: bool = True,
) -> FastAPI:
    """The NOC REST API over ``inventory`` (made from ``settings`` when not given)."""
    if inventory is None:
        inventory = OrdersService(settings)
        if settings.resync_after_publish:
            from provisioner.voice.resync import follow_publishes

            follow_publishes(inventory)
    limits = limits or ApiLimits.from_settings(settings)
    app = FastAPI(
        title="Office Smart provisioner",
        version=__version__,
        description="NOC REST API: orders, devices, binds, push jobs and audit. Bearer tokens "
        "from "
        "`provisioner token create --role viewer|technician|noc|admin`.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,  # served by _docs_router, with local assets
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # operationId = the handler's name (create_order, bind_device, ...): short for clients.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.settings = settings
    app.state.inventory = inventory
    app.state.limits = limits
    app.state.rate_limiter = RateLimiter(limits.rate, limits.burst)
    problems.install(app)

    api = APIRouter(
        prefix=PREFIX,
        responses=problems.COMMON_RESPONSES,
        dependencies=[Depends(reject_unknown_query)],
    )
    api.include_router(orders.router)
    api.include_router(devices.router)
    api.include_router(resync.router)
    api.include_router(jobs.router)
    api.include_router(push.router)
    api.include_router(audit.router)
    api.include_router(blocks.router)
    api.include_router(events.router)
    app.include_router(api)
    app.include_router(health.router)
    app.include_router(_docs_router())
    if tech:
        from provisioner.tech.pages import mount

        mount(app)

    app.add_middleware(BodyLimitMiddleware, max_body=limits.max_body)
    app.add_middleware(
        MetricsMiddleware,
        registry=METRICS,
        templates=lambda: {getattr(r, "endpoint", None): path for path, _, r in iter_routes(app)},
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
