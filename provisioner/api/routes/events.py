"""The live stream of an order's device states: ``GET /events?order=`` (server-sent events).

The technician page and scripts follow an install with it. It is built from what the store
holds (the serving layer writes fetches, refusals and claims in the background; pushes store
their results): every ``POLL`` seconds the stream asks the orders service for a cheap
fingerprint of the order (:meth:`OrderReads.watch_key`), and only when that moved does it
read the order's status and send what changed. A fetch is on the stream well within 2 s.

Events (``data`` is one line of JSON):

- ``snapshot``: the whole :class:`OrderStatusPublic`, first, and again whenever devices come
  or go, free extensions or blocked sources change;
- ``device``: one :class:`DeviceStatus` whose state or last fetch/push changed.

The stream is a view of the current state, not a log: a client that reconnects (with or
without ``Last-Event-ID``) gets a fresh ``snapshot`` first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from provisioner.api import schemas, views
from provisioner.api.deps import DevicesRead, OrdersDep
from provisioner.api.problems import NOT_FOUND
from provisioner.errors import OrderUnknown
from provisioner.orders.service import OrdersService

router = APIRouter(tags=["events"])

POLL = 0.5  # seconds between looks at the order's fingerprint
KEEPALIVE = 15.0  # a comment line this often, so proxies keep the stream open
SEP = "\n"


# One event of the stream (as the push job's stream documents its events).
_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`text/event-stream`: a `snapshot` (OrderStatusPublic) first, then "
        "`device` events (DeviceStatus) as devices change state; a new `snapshot` when devices "
        "come or go. Reconnecting starts with a fresh snapshot.",
        "content": {
            "text/event-stream": {
                "schema": {
                    "oneOf": [
                        schemas.sse_event(
                            "snapshot",
                            {"$ref": "#/components/schemas/OrderStatusPublic"},
                            "The whole order's status.",
                        ),
                        schemas.sse_event(
                            "device",
                            {"$ref": "#/components/schemas/DeviceStatus"},
                            "One device that changed.",
                        ),
                    ]
                }
            }
        },
    }
}


def _dump(model: Any) -> str:
    return json.dumps(model.model_dump(mode="json"), separators=(",", ":"))


def _frame(o: schemas.OrderStatusPublic) -> tuple[str, dict[str, str]]:
    """(what a snapshot would say apart from the devices, each device's JSON)."""
    shell = o.model_copy(update={"devices": [], "counts": {}})
    return _dump(shell), {d.device: _dump(d) for d in o.devices}


async def follow(
    inv: OrdersService,
    order_id: str,
    stop: anyio.Event,
    poll: float = POLL,
    seconds: float | None = None,
) -> AsyncIterator[dict[str, str]]:
    """The order's events until the client goes, ``stop`` is set or ``seconds`` passed."""
    end = None if seconds is None else anyio.current_time() + seconds
    seq = 0
    key: tuple[int, ...] | None = None
    shell = ""
    devices: dict[str, str] = {}
    while not stop.is_set() and (end is None or anyio.current_time() < end):
        now_key = await anyio.to_thread.run_sync(inv.watch_key, order_id)
        if now_key != key:
            key = now_key
            status = await anyio.to_thread.run_sync(inv.read_status, order_id)
            public = views.order_status_public(status)
            new_shell, new_devices = _frame(public)
            if new_shell != shell or set(new_devices) != set(devices):
                seq += 1
                yield {"id": str(seq), "event": "snapshot", "data": _dump(public)}
            else:
                for device, data in new_devices.items():
                    if devices.get(device) != data:
                        seq += 1
                        yield {"id": str(seq), "event": "device", "data": data}
            shell, devices = new_shell, new_devices
        with anyio.move_on_after(poll):
            await stop.wait()


@router.get(
    "/events",
    response_class=EventSourceResponse,
    summary="Follow an order's device states as server-sent events",
    responses={**NOT_FOUND, **_DOC},
)
def order_events(
    principal: DevicesRead,
    inv: OrdersDep,
    order: Annotated[
        str, Query(pattern=schemas.ORDER_ID_PATTERN, max_length=64, description="Order id.")
    ],
    seconds: Annotated[
        int | None,
        Query(ge=1, le=86_400, description="End the stream after this long (default: never)."),
    ] = None,
) -> EventSourceResponse:
    """Every change of a device's state (bind, arm, fetch, refusal, block, push) within a
    second or so. A technician may follow the orders on the token only."""
    if not principal.sees(order):
        raise OrderUnknown(f"order {order}: not in the store")
    inv.read_order(order, lambda _o: None)  # 404 before the stream starts
    stop = anyio.Event()
    return EventSourceResponse(
        follow(inv, order, stop, seconds=seconds),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        ping=KEEPALIVE,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep=SEP),
        sep=SEP,
        shutdown_event=stop,
        shutdown_grace_period=2 * POLL,
    )
