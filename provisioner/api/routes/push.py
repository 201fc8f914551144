"""Push jobs: start one on an order's switches and IAD, read its status, follow it (SSE)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from provisioner.api import schemas
from provisioner.api.auth import Principal
from provisioner.api.deps import DevicesPush, DevicesRead, OrdersDep, renderer_of
from provisioner.api.problems import CONFLICT, NOT_FOUND, TargetsRefused, Violation
from provisioner.api.pushjobs import JobBoard, JobRun, TooManyJobs, event_data
from provisioner.api.routes.orders import OrderId
from provisioner.errors import OrderConflict
from provisioner.orders.service import OrdersService
from provisioner.push import queue
from provisioner.push.targets import DeviceAddress, Timeouts, device_keys

router = APIRouter(tags=["push"])

JobId = Annotated[
    str,
    Path(pattern=schemas.JOB_ID_PATTERN, description="Push job id (32 hex digits)."),
]
SSE_POLL = 0.2  # seconds between looks at a running job's events
SSE_KEEPALIVE = 15.0  # a comment line this often, so proxies keep the stream open
SSE_SEP = "\n"  # the event separator (sse-starlette's default is CRLF)


# One event of the stream (OpenAPI 3.1 has no itemSchema: ``schema`` describes each event,
# as schemathesis and the SSE tooling read it). ``data`` is one line of JSON.
_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`text/event-stream`: `step`, `result` (a PushDeviceResult) and a last "
        "`done` event with the summary. Reconnect with `Last-Event-ID` to resume.",
        "content": {
            "text/event-stream": {
                "schema": {
                    "oneOf": [
                        schemas.sse_event(
                            "step",
                            schemas.PushStepEvent.model_json_schema(),
                            "A device moved to a step (connect, backup, diff, commit, ...).",
                        ),
                        schemas.sse_event(
                            "result",
                            {"$ref": "#/components/schemas/PushDeviceResult"},
                            "A device's push ended.",
                        ),
                        schemas.sse_event(
                            "done",
                            schemas.PushDoneEvent.model_json_schema(),
                            "The job is over; the stream ends.",
                        ),
                    ]
                }
            }
        },
    }
}


def board_of(request: Request) -> JobBoard:
    board: JobBoard | None = getattr(request.app.state, "push_jobs", None)
    if board is None:
        board = JobBoard(request.app.state.settings.push_jobs_running)
        request.app.state.push_jobs = board
    return board


def _visible_job(request: Request, inv: OrdersService, principal: Principal, job_id: str) -> JobRun:
    run = board_of(request).get(inv, job_id)
    if run is None or not principal.sees(run.order):
        raise HTTPException(404, f"push job {job_id}: not found")
    return run


def _addresses(
    request: Request, body: schemas.PushCreate, known: dict[str, Any]
) -> dict[str, DeviceAddress]:
    """Every target checked: a pushed device of the order, an address inside push_networks."""
    networks = request.app.state.settings.push_network_list
    problems: list[Violation] = []
    out = {}
    for device_id, target in body.targets.items():
        where = f"targets.{device_id}"
        if device_id not in known:
            problems.append(
                Violation(path=where, message="not a pushed device (switch or IAD) of this order")
            )
            continue
        address = DeviceAddress(
            str(ipaddress.ip_address(target.host)),
            target.port,
            snmp_version=target.snmp_version,
            username=target.username,
        )
        if not address.inside(networks):
            problems.append(
                Violation(path=f"{where}.host", message=f"{address.host} is outside push_networks")
            )
            continue
        out[device_id] = address
    if problems:
        raise TargetsRefused(problems)
    return out


@router.post(
    "/orders/{order_id}/push",
    status_code=202,
    response_model=schemas.PushJobPublic,
    summary="Start a push job (backup, diff, commit, verify) on some of an order's devices",
    responses={**NOT_FOUND, **CONFLICT},
)
def start_push(
    principal: DevicesPush,
    inv: OrdersDep,
    request: Request,
    order_id: OrderId,
    body: schemas.PushCreate,
) -> JSONResponse:
    """202 at once; follow ``/push-jobs/{id}`` or its ``/events``. One push per device at a
    time: a device already being pushed ends ``failed`` with the other job named."""
    state = inv.read_order(order_id, lambda order: order.state, visible=principal.sees)
    if state != schemas.OrderState.active:
        raise OrderConflict(f"order {order_id}: is {state}; nothing is pushed")
    renderer = renderer_of(request)
    keys = {k.device_id: k for k in device_keys(inv, renderer, order_id)}
    addresses = _addresses(request, body, keys)
    job_id = uuid.uuid4().hex
    try:
        run = board_of(request).start(
            inv,
            renderer,
            order_id,
            [(keys[d], a) for d, a in addresses.items()],
            job_id=job_id,
            actor=principal.actor,
            dry_run=body.dry_run,
            trust_on_first_use=body.trust_on_first_use,
            timeouts=Timeouts(
                connect=body.connect_timeout,
                command=body.command_timeout,
                retries=body.retries,
            ),
        )
    except TooManyJobs as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "5"}) from None
    return JSONResponse(
        run.public().model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/api/v1/push-jobs/{job_id}"},
    )


@router.get(
    "/push-jobs/{job_id}",
    response_model=schemas.PushJobPublic,
    summary="A push job's state and per-device results",
    responses=NOT_FOUND,
)
def get_push_job(
    principal: DevicesRead, inv: OrdersDep, request: Request, job_id: JobId
) -> schemas.PushJobPublic:
    """Diffs are masked for every role. A technician sees the jobs of the token's orders."""
    return _visible_job(request, inv, principal, job_id).public()


async def _events(
    inv: OrdersService, run: JobRun, seen: int, server_stops: anyio.Event
) -> AsyncIterator[dict[str, str]]:
    """The job's events after ``seen``, then new ones until the job is over.

    A job's events are read from the store (whichever process runs it); a job pushed from
    the CLI in-process has only its stored results. sse-starlette encodes them, sends the
    keep-alive comments and drops the stream when the client goes away. When the server
    shuts down it sets ``server_stops``: the stream then ends cleanly, and the client
    reconnects (``Last-Event-ID``) to a server still running.
    """
    while True:
        if run.stored:
            items, finished = await anyio.to_thread.run_sync(queue.events_after, inv, run.id, seen)
            items = [(i, name, event_data(name, data)) for i, name, data in items]
        else:
            items, finished = run.events_after(seen)
        for event_id, name, data in items:
            yield {
                "id": str(event_id),
                "event": name,
                "data": json.dumps(data, separators=(",", ":")),
            }
            seen = event_id
        if (finished and not items) or server_stops.is_set():
            return
        await asyncio.sleep(SSE_POLL)


def _keep_alive() -> ServerSentEvent:
    return ServerSentEvent(comment="keep-alive", sep=SSE_SEP)


@router.get(
    "/push-jobs/{job_id}/events",
    response_class=EventSourceResponse,
    summary="Follow a push job as server-sent events",
    responses={**NOT_FOUND, **_SSE_DOC},
)
def push_job_events(
    principal: DevicesRead,
    inv: OrdersDep,
    request: Request,
    job_id: JobId,
    # Plain ``int`` with a default, not ``int | None``: the schema then says "integer" and a
    # header of "null" is not schema-valid (a header has no null, only strings).
    last_event_id: Annotated[
        int,
        Header(ge=0, le=1_000_000, description="Resume after this event (SSE reconnect)."),
    ] = 0,
) -> EventSourceResponse:
    """Every event so far, then new ones as they come; the stream ends after ``done``."""
    run = _visible_job(request, inv, principal, job_id)
    server_stops = anyio.Event()
    return EventSourceResponse(
        _events(inv, run, last_event_id, server_stops),
        headers={"Cache-Control": "no-cache"},
        ping=SSE_KEEPALIVE,
        ping_message_factory=_keep_alive,
        sep=SSE_SEP,
        shutdown_event=server_stops,
        shutdown_grace_period=5 * SSE_POLL,
    )
