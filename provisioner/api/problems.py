"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API returns goes through here, so clients parse one shape: ``type``,
``title``, ``status``, ``detail``, and for refused documents ``violations`` (every broken
rule with its path, limit and line). Request input is never echoed back: a refused secret
must not come back in the error about it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from provisioner.errors import (
    BindRefused,
    BlockUnknown,
    DeviceUnknown,
    InvalidMac,
    OrderConflict,
    OrderRejected,
    OrderUnknown,
    ProvisionerError,
)

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("provisioner.api")


class Violation(BaseModel):
    """One broken rule: where in the document (path, line) and what (message, limit)."""

    path: str
    message: str
    limit: str = ""
    line: int | None = None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    violations: list[Violation] | None = None
    violations_total: int | None = Field(
        None, description="How many violations there are: `violations` lists the first 100."
    )


class DocumentRefused(Exception):
    """An order document (body of POST/PUT) broke the schema or the offer's rules.

    ``total``: how many violations the document has, when ``violations`` holds only the first.
    """

    type_ = "urn:provisioner:problem:order-rejected"

    def __init__(self, violations: list[Violation], total: int | None = None):
        self.violations = violations
        self.total = len(violations) if total is None else total
        super().__init__(f"{self.total} violations")

    @property
    def detail(self) -> str:
        return f"the order document breaks {self.total} rule(s)"


class TargetsRefused(DocumentRefused):
    """A push request named targets that cannot be pushed (not a switch or IAD of the order,
    or an address outside ``push_networks``): schema-valid, refused for what it names."""

    type_ = "urn:provisioner:problem:push-refused"

    @property
    def detail(self) -> str:
        return f"{len(self.violations)} push target(s) refused"


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


def problem(
    status: int,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    violations: list[Violation] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    violations_total: int | None = None,
) -> ProblemResponse:
    body = Problem(
        type=type_,
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=instance,
        violations=violations,
        violations_total=violations_total
        if violations_total is not None or violations is None
        else len(violations),
    )
    return ProblemResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _problem_doc(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


Responses = dict[int | str, dict[str, Any]]

# Documented on every operation, so a client (and schemathesis) knows each error's shape.
COMMON_RESPONSES: Responses = {
    400: _problem_doc("The body could not be read (not UTF-8, not JSON)."),
    401: _problem_doc("No valid bearer token (see WWW-Authenticate)."),
    403: _problem_doc("The token's role may not do this."),
    413: _problem_doc("Request body over the size limit."),
    422: _problem_doc("The request or the order document breaks a rule; see violations."),
    429: _problem_doc("Rate limit for this token exceeded; see Retry-After."),
    503: _problem_doc("The store or the secret key is not usable right now."),
}
NOT_FOUND: Responses = {404: _problem_doc("No such order or device, or not visible to you.")}
UNSUPPORTED: Responses = {415: _problem_doc("Body is neither YAML nor JSON.")}
CONFLICT: Responses = {409: _problem_doc("Refused by the offer's rules or the order's state.")}


# The member names pydantic adds to the location of an error in one member of a union (an
# optional field is a union with None): not part of the path a client sent.
_MEMBER_TAGS = frozenset(
    {"str", "int", "float", "bool", "none", "constrained-str", "constrained-int"}
)


def _validation_violations(exc: RequestValidationError) -> list[Violation]:
    out = []
    for err in exc.errors():
        if err.get("type") == "none_required":
            continue  # "Input should be None": the optional field's other member says why
        loc = [str(p) for p in err.get("loc", ())]
        loc = [p for p in loc if p not in _MEMBER_TAGS and "[" not in p]
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append(Violation(path=".".join(loc), message=message))
    return out or [Violation(path="", message="does not match the API schema")]


def _invalid_request(violations: list[Violation]) -> ProblemResponse:
    return problem(
        422,
        "the request does not match the API schema",
        type_="urn:provisioner:problem:invalid-request",
        violations=violations,
    )


# Errors whose own message is the detail: status and problem type of each.
_SAID_AS_IS: dict[type[ProvisionerError], tuple[int, str]] = {
    OrderUnknown: (404, "urn:provisioner:problem:not-found"),
    DeviceUnknown: (404, "urn:provisioner:problem:not-found"),
    BlockUnknown: (404, "urn:provisioner:problem:not-found"),
    BindRefused: (409, "urn:provisioner:problem:bind-refused"),
    OrderConflict: (409, "urn:provisioner:problem:order-conflict"),
}


def _as_is(status: int, type_: str) -> Callable[[Request, Exception], Awaitable[ProblemResponse]]:
    async def handler(request: Request, exc: Exception) -> ProblemResponse:
        return problem(status, str(exc), type_=type_)

    return handler


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem details."""

    async def http_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else None
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route's methods; list every route's at this path.
            from provisioner.api.routing import allowed_methods

            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return problem(exc.status_code, detail, headers=headers or None)

    async def validation_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, RequestValidationError)
        return _invalid_request(_validation_violations(exc))

    async def rejected(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, OrderRejected)
        return problem(
            422,
            "the order breaks the offer's rules",
            type_="urn:provisioner:problem:order-rejected",
            violations=[Violation(path="", message=v) for v in exc.violations],
        )

    async def refused_document(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, DocumentRefused)
        return problem(
            422,
            exc.detail,
            type_=exc.type_,
            violations=exc.violations,
            violations_total=exc.total,
        )

    async def invalid_mac(request: Request, exc: Exception) -> ProblemResponse:
        # A MAC that reached the code unchecked (the schemas check the API's own): say why.
        return _invalid_request([Violation(path="mac", message=str(exc))])

    async def provisioner_error(request: Request, exc: Exception) -> ProblemResponse:
        # Settings, key or store trouble: the operator's log has the line, the client a 503.
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return problem(503, "the server cannot do this now; the operator is told")

    async def crash(request: Request, exc: Exception) -> ProblemResponse:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return problem(500, "unexpected server error")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(OrderRejected, rejected)
    app.add_exception_handler(DocumentRefused, refused_document)
    app.add_exception_handler(InvalidMac, invalid_mac)
    for error, (status, type_) in _SAID_AS_IS.items():
        app.add_exception_handler(error, _as_is(status, type_))
    app.add_exception_handler(ProvisionerError, provisioner_error)
    app.add_exception_handler(Exception, crash)
