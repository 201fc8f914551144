"""Orders: create from a document, list, read, replace, cancel, validate; admin secrets."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from provisioner.api import schemas, views
from provisioner.api.auth import Principal
from provisioner.api.deps import (
    OrdersDep,
    OrdersRead,
    OrdersWrite,
    PageLimit,
    PageOffset,
    SecretsRead,
)
from provisioner.api.problems import (
    CONFLICT,
    MEDIA_TYPE,
    NOT_FOUND,
    UNSUPPORTED,
    DocumentRefused,
    Violation,
)
from provisioner.api.schemas import ORDER_EXAMPLE, ORDER_ID_PATTERN
from provisioner.documents.document import OrderDocument
from provisioner.documents.validate import Checked, check_body
from provisioner.documents.workers import (
    JobFailed,
    JobOutOfMemory,
    JobTimeout,
    WorkerPool,
    WorkersBusy,
)
from provisioner.errors import OrderConflict, OrderRejected
from provisioner.orders.reads import OrderQuery
from provisioner.orders.service import OrdersService

router = APIRouter(prefix="/orders", tags=["orders"])

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
SOURCE = "api"
log = logging.getLogger("provisioner.api")

# Documents are read and checked in worker processes, so that the GIL-bound work of a big or
# hostile one never starves device serving in this process (DESIGN.md §5). The largest
# document the caps allow takes about 0.03 s; a 1 MiB body of junk about 1 s.
DOCUMENT_WORKERS = 2  # processes, started on the first document
DOCUMENT_SECONDS = 10.0  # per document; past it the worker is replaced and the answer is 422
DOCUMENT_QUEUE = 8  # documents waiting for a worker; past it, 503 with Retry-After
# Address space of a worker. One uses about 40 MiB idle and 200 MiB on a 1 MiB body of junk.
DOCUMENT_MEMORY = 1024 * 1024 * 1024
DOCUMENTS = WorkerPool(
    DOCUMENT_WORKERS,
    DOCUMENT_SECONDS,
    DOCUMENT_QUEUE,
    preload=("provisioner.documents.validate",),
    memory=DOCUMENT_MEMORY,
)

OrderId = Annotated[
    str, Path(pattern=ORDER_ID_PATTERN, description="Order id.", examples=[ORDER_EXAMPLE])
]

# Both media types carry the same document (§2b of the design); YAML keeps line numbers.
_DOCUMENT_REF = {"$ref": "#/components/schemas/OrderDocument"}
# Validation answers for any mapping (that is its job); only a non-mapping is a bad request.
ANY_DOCUMENT: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A candidate order document (see OrderDocument), YAML or JSON.",
        "content": {
            "application/yaml": {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}
DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One order document, as YAML (`application/yaml`) or JSON.",
        "content": {
            "application/yaml": {"schema": _DOCUMENT_REF},
            "application/json": {"schema": _DOCUMENT_REF},
        },
    }
}


@dataclass
class OrderBody:
    """A posted document after validation (lines: YAML's, and JSON's syntax errors)."""

    checked: Checked

    @property
    def is_mapping(self) -> bool:
        return self.checked.is_mapping

    def violations(self) -> list[Violation]:
        """The first reported problems (``checked.total`` counts them all)."""
        return [
            Violation(path=p.path, message=p.message, limit=p.limit, line=p.line)
            for p in self.checked.reported()
        ]

    def refused(self) -> DocumentRefused:
        return DocumentRefused(self.violations(), total=self.checked.total)


async def read_document(request: Request) -> OrderBody:
    """Parse and validate the body with the same rules as ``provisioner validate``, in a
    worker process with a time budget."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    is_json = ctype == "application/json" or ctype.endswith("+json")
    if not is_json and ctype not in YAML_TYPES:
        raise HTTPException(415, "send the order as application/yaml or application/json")
    try:
        checked = await run_in_threadpool(DOCUMENTS.run, check_body, raw, is_json)
    except JobTimeout:
        raise _over_budget("took", f"{DOCUMENTS.seconds:g} s") from None
    except JobOutOfMemory:
        raise _over_budget("needs", f"{DOCUMENTS.memory // (1024 * 1024)} MiB") from None
    except WorkersBusy:
        raise HTTPException(
            503, "too many documents are being checked; retry", headers={"Retry-After": "1"}
        ) from None
    except JobFailed as exc:
        # The job failed in a worker: its one-line reason, no local traceback worth logging.
        log.error("%s %s: document check failed: %s", request.method, request.url.path, exc)  # noqa: TRY400
        violation = Violation(path="", message="the document could not be checked")
        raise DocumentRefused([violation]) from None
    return OrderBody(checked)


def _over_budget(verb: str, budget: str) -> DocumentRefused:
    """The refusal of a document whose check went past a worker's budget (time or memory)."""
    violation = Violation(
        path="",
        message=f"reading and checking this document {verb} more than {budget}",
        limit=f"{budget} per document",
    )
    return DocumentRefused([violation])


DocumentBody = Annotated[OrderBody, Depends(read_document)]


def _valid_document(inv: OrdersService, body: OrderBody, principal: Principal) -> OrderDocument:
    if body.checked.ok and body.checked.document is not None:
        return body.checked.document
    # The refused body is untrusted: only a well-formed order id goes into the audit row,
    # and the problem lines are bounded, so a refusal cannot bloat the log.
    order_id = body.checked.order_id
    if not re.fullmatch(ORDER_ID_PATTERN, order_id):
        order_id = ""
    lines = [line[:300] for line in body.checked.lines()[:50]]
    inv.record_refusal(order_id, SOURCE, lines, principal.actor)
    raise body.refused()


def _apply(
    inv: OrdersService, doc: OrderDocument, principal: Principal, expect: Literal["new", "active"]
) -> schemas.OrderApplied:
    try:
        result = inv.apply(
            doc,
            source=SOURCE,
            actor=principal.actor,
            expect=expect,
            rename_customer="customers:rename" in principal.permissions,
        )
    except OrderRejected as exc:
        inv.record_refusal(doc.order, SOURCE, exc.violations, principal.actor)
        raise
    return schemas.OrderApplied(
        order=result.order_id,
        status=schemas.ApplyStatus(result.status),
        changes=result.changes,
    )


@router.get("", response_model=schemas.OrderPage, summary="List orders")
def list_orders(
    principal: OrdersRead,
    inv: OrdersDep,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
    vat: Annotated[str | None, Query(max_length=32, description="Customer VAT number.")] = None,
    plan: Annotated[str | None, Query(max_length=32, description="Plan key.")] = None,
    state: schemas.OrderState | None = None,
    site: Annotated[str | None, Query(max_length=40, description="Has a site of this id.")] = None,
) -> schemas.OrderPage:
    """Orders by id, filtered; a technician sees only the orders on the token."""
    query = OrderQuery(
        vat=vat,
        plan=plan,
        state=state.value if state else None,
        site=site,
        only=principal.visible_orders,
    )
    page = inv.read_orders(query, views.order_summary, limit, offset)
    return schemas.OrderPage(items=page.items, total=page.total, limit=limit, offset=offset)


@router.post(
    "",
    status_code=201,
    response_model=schemas.OrderApplied,
    summary="Create an order from its document",
    openapi_extra=DOCUMENT_BODY,
    responses={**CONFLICT, **UNSUPPORTED},
)
def create_order(
    principal: OrdersWrite, inv: OrdersDep, body: DocumentBody
) -> schemas.OrderApplied:
    """Validate like ``provisioner validate``, then store. 422 lists every violation."""
    doc = _valid_document(inv, body, principal)
    try:
        return _apply(inv, doc, principal, "new")
    except OrderConflict:
        raise OrderConflict(f"order {doc.order}: exists; PUT /api/v1/orders/{doc.order}") from None


@router.post(
    "/validate",
    response_model=schemas.OrderValidation,
    summary="Validate an order document without storing it",
    openapi_extra=ANY_DOCUMENT,
    responses=UNSUPPORTED,
)
def validate_order(principal: OrdersRead, body: DocumentBody) -> schemas.OrderValidation:
    """200 for any mapping: ``valid`` and every violation. A non-mapping body is a 422."""
    if not body.is_mapping:
        raise body.refused()
    return schemas.OrderValidation(
        valid=body.checked.ok,
        order=body.checked.order_id or None,
        violations=body.violations(),
        violations_total=body.checked.total,
    )


def _etag(generation: int) -> str:
    return f'"g{generation}"'


def _versioned(order: Any) -> tuple[schemas.OrderPublic, str]:
    return views.order_public(order), _etag(order.generation)


PRECONDITION: dict[int | str, dict[str, Any]] = {
    412: {
        "description": "`If-Match` names another version: the order changed since it was read.",
        "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
}


@router.get(
    "/{order_id}",
    response_model=schemas.OrderPublic,
    summary="Read an order",
    responses={
        **NOT_FOUND,
        304: {"description": "`If-None-Match` names the current version."},
    },
)
def get_order(
    principal: OrdersRead,
    inv: OrdersDep,
    response: Response,
    order_id: OrderId,
    if_none_match: Annotated[
        str | None, Header(max_length=200, description="An ETag read before.")
    ] = None,
) -> Any:
    """Sites, extensions and devices with their state. Never a secret. The ``ETag`` names
    the order's version (every write to it makes a new one; devices' fetches do not): send it
    back as ``If-Match`` with a PUT, so that a concurrent change is not overwritten."""
    body, etag = inv.read_order(order_id, _versioned, visible=principal.sees)
    if if_none_match is not None and etag in _tags(if_none_match):
        return Response(status_code=304, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return body


def _tags(header: str) -> set[str]:
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


@router.get(
    "/{order_id}/status",
    response_model=schemas.OrderStatusPublic,
    summary="Every device of an order with its state, in one call",
    responses=NOT_FOUND,
)
def get_order_status(
    principal: OrdersRead, inv: OrdersDep, order_id: OrderId
) -> schemas.OrderStatusPublic:
    """Planned, bound, armed, fetched (which file, when, from where), refused or blocked
    fetches, pushing, verified or failed pushes: the same states as ``provisioner status``
    and the technician page."""
    return views.order_status_public(inv.read_status(order_id, visible=principal.sees))


@router.put(
    "/{order_id}",
    response_model=schemas.OrderApplied,
    summary="Replace an order with a new document",
    openapi_extra=DOCUMENT_BODY,
    responses={**NOT_FOUND, **CONFLICT, **UNSUPPORTED, **PRECONDITION},
)
def replace_order(
    principal: OrdersWrite,
    inv: OrdersDep,
    response: Response,
    order_id: OrderId,
    body: DocumentBody,
    if_match: Annotated[
        str | None,
        Header(max_length=200, description="The ETag of the version this change is based on."),
    ] = None,
) -> schemas.OrderApplied:
    """Re-apply (idempotent): status ``unchanged`` or ``updated``; binds are kept. With
    ``If-Match``, 412 when the order changed since that version was read."""
    current = inv.read_order(order_id, lambda o: _etag(o.generation))  # 404 first
    doc = _valid_document(inv, body, principal)  # then 422 for a bad document
    if doc.order != order_id:
        raise DocumentRefused(
            [Violation(path="order", message=f"is {doc.order}, the URL says {order_id}")]
        )
    if if_match is not None and if_match.strip() != "*" and current not in _tags(if_match):
        raise HTTPException(
            412, f"order {order_id}: changed since that version was read (now {current})"
        )
    applied = _apply(inv, doc, principal, "active")  # 409 when cancelled, checked in the write
    response.headers["ETag"] = inv.read_order(order_id, lambda o: _etag(o.generation))
    return applied


@router.post(
    "/{order_id}/cancel",
    response_model=schemas.CancelPublic,
    summary="Cancel an order (kept for audit)",
    responses=NOT_FOUND,
)
def cancel_order(principal: OrdersWrite, inv: OrdersDep, order_id: OrderId) -> schemas.CancelPublic:
    """State becomes ``cancelled``; rows stay. Cancelling twice changes nothing."""
    inv.cancel(order_id, actor=principal.actor)
    return schemas.CancelPublic(order=order_id, state=schemas.OrderState.cancelled)


@router.get(
    "/{order_id}/secrets",
    response_model=schemas.SecretsPublic,
    summary="Read an order's secrets (admin only)",
    responses=NOT_FOUND,
)
def get_secrets(principal: SecretsRead, inv: OrdersDep, order_id: OrderId) -> schemas.SecretsPublic:
    """Every credential of the order, decrypted. Each read is audited."""
    values = inv.read_secrets(order_id, actor=principal.actor, visible=principal.sees)
    items = [
        schemas.SecretPublic(owner=v.owner, name=v.name, value=v.value, source=v.source)
        for v in values
    ]
    return schemas.SecretsPublic(order=order_id, secrets=items)
