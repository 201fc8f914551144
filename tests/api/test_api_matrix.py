"""Access matrix: every operation of the OpenAPI document x every role x own/other order.

The expected status comes from the role table below (the specification), not from the
code under test. An operation missing from ``OPS`` fails ``test_matrix_covers_every_operation``,
so a new route cannot ship without its row here.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apistore import (
    CANARY,
    OPEN_LIMITS,
    OTHER,
    OWN,
    SAMPLES,
    Store,
    canary_document,
    copy_store,
    stored_push_job,
)
from fastapi.testclient import TestClient

from provisioner.api.app import create_app

READ = {"orders:read", "devices:read", "audit:read"}
FIELD = {"devices:bind", "devices:arm", "devices:push", "devices:resync"}
ALLOWED: dict[str | None, set[str]] = {
    None: set(),
    "viewer": READ,
    "technician": READ | FIELD,
    "noc": READ | FIELD | {"orders:write", "blocks:lift"},
    "admin": READ | FIELD | {"orders:write", "secrets:read", "blocks:lift", "customers:rename"},
}
ROLES = (None, "viewer", "technician", "noc", "admin")
TECH_ORDERS = {OWN}


def _device(store: Store, order: str) -> tuple[str, str]:
    """(MAC, device id) of a bound device the order document itself names."""
    with store.inventory.db.read() as session:
        o = store.inventory.get(session, order)
        dev = next(d for d in o.devices if d.mac and d.origin == "document")
        return dev.mac or "", dev.device_id


def _phone(store: Store, order: str) -> str:
    """MAC of a bound desk phone or DECT base of the order (what a resync tells)."""
    from provisioner.catalog import MODELS

    with store.inventory.db.read() as session:
        o = store.inventory.get(session, order)
        return next(
            d.mac or ""
            for d in o.devices
            if d.mac and MODELS[d.model].kind in ("phone", "dect_base")
        )


def _first_file(store: Store, order: str) -> str:
    """URL of the first file rendered for the order's first bound device."""
    from provisioner.render.engine import Renderer

    mac = _device(store, order)[0]
    _, files = Renderer(store.settings, store.inventory).device_files(mac)
    return f"/api/v1/devices/{mac}/files/{next(iter(files))}"


def _document(order: str) -> str:
    return canary_document() if order == OWN else (SAMPLES / f"{order}.yaml").read_text()


def _new_document() -> str:
    import yaml

    doc = yaml.safe_load((SAMPLES / f"{OTHER}.yaml").read_text())
    doc["order"] = "WT-2026-900002"
    for dev in doc["devices"]:
        dev.pop("mac", None)
        dev.pop("serial", None)
    return yaml.safe_dump(doc, sort_keys=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _push(s: Store, order: str) -> Request:
    """A dry-run push of the order's IAD to a closed loopback port (fails at once: no wait)."""
    target = {"host": "127.0.0.1", "port": _closed_port()}
    body = {"targets": {_iad(s, order): target}, "dry_run": True, "retries": 0}
    return {"url": f"/api/v1/orders/{order}/push", "json": body}


def _block(s: Store) -> str:
    """A source blocked in the store (as the sweep guard leaves it), for lifting."""
    from datetime import timedelta

    from provisioner.store.models import SourceBlock, utcnow

    source = "203.0.113.7"
    with s.inventory.db.write() as session:
        now = utcnow()
        session.add(SourceBlock(source=source, blocked_at=now, until=now + timedelta(minutes=15),
                                protocol="http", names=20))  # fmt: skip
    return source


def _iad(s: Store, order: str) -> str:
    with s.inventory.db.read() as session:
        return next(
            d.device_id for d in s.inventory.get(session, order).devices if d.model == "iad"
        )


def _job_path(suffix: str = "") -> Callable[[Store, str], Request]:
    """A finished push job of the order, as the store keeps it (read back after a restart)."""

    def build(s: Store, order: str) -> Request:
        job = hashlib.md5(order.encode()).hexdigest()  # noqa: S324 - an id, not a digest
        return {"url": f"/api/v1/push-jobs/{stored_push_job(s.inventory, order, job)}{suffix}"}

    return build


Request = dict[str, Any]
YAML = {"content-type": "application/yaml"}


@dataclass(frozen=True)
class Op:
    permission: str | None  # None: public
    scoped: bool  # acts on one order (by id or by a device's MAC)
    success: int
    mutates: bool
    build: Callable[[Store, str], Request]


def _order_path(suffix: str = "") -> Callable[[Store, str], Request]:
    return lambda s, order: {"url": f"/api/v1/orders/{order}{suffix}"}


def _mac_path(suffix: str = "", **body: Any) -> Callable[[Store, str], Request]:
    def build(s: Store, order: str) -> Request:
        req: Request = {"url": f"/api/v1/devices/{_device(s, order)[0]}{suffix}"}
        if body:
            req["json"] = body
        return req

    return build


OPS: dict[tuple[str, str], Op] = {
    ("GET", "/api/v1/orders"): Op(
        "orders:read", False, 200, False, lambda s, o: {"url": "/api/v1/orders"}
    ),
    ("POST", "/api/v1/orders"): Op(
        "orders:write",
        False,
        201,
        True,
        lambda s, o: {"url": "/api/v1/orders", "content": _new_document(), "headers": YAML},
    ),
    ("POST", "/api/v1/orders/validate"): Op(
        "orders:read",
        False,
        200,
        False,
        lambda s, o: {"url": "/api/v1/orders/validate", "content": _document(o), "headers": YAML},
    ),
    ("GET", "/api/v1/orders/{order_id}"): Op("orders:read", True, 200, False, _order_path()),
    ("PUT", "/api/v1/orders/{order_id}"): Op(
        "orders:write",
        True,
        200,
        True,
        lambda s, o: {"url": f"/api/v1/orders/{o}", "content": _document(o), "headers": YAML},
    ),
    ("POST", "/api/v1/orders/{order_id}/cancel"): Op(
        "orders:write", True, 200, True, _order_path("/cancel")
    ),
    ("GET", "/api/v1/orders/{order_id}/secrets"): Op(
        "secrets:read", True, 200, False, _order_path("/secrets")
    ),
    ("POST", "/api/v1/orders/{order_id}/bind"): Op(
        "devices:bind",
        True,
        200,
        True,
        lambda s, o: {
            "url": f"/api/v1/orders/{o}/bind",
            "json": dict(zip(("mac", "device"), _device(s, o), strict=True)),
        },
    ),
    ("POST", "/api/v1/orders/{order_id}/unbind"): Op(
        "devices:bind",
        True,
        200,
        True,
        lambda s, o: {"url": f"/api/v1/orders/{o}/unbind", "json": {"device": _device(s, o)[1]}},
    ),
    ("POST", "/api/v1/orders/{order_id}/arm"): Op(
        "devices:arm",
        True,
        200,
        True,
        lambda s, o: {"url": f"/api/v1/orders/{o}/arm", "json": {"minutes": 30}},
    ),
    ("POST", "/api/v1/devices/{mac}/arm"): Op("devices:arm", True, 200, True, _mac_path("/arm")),
    ("POST", "/api/v1/orders/{order_id}/resync"): Op(
        "devices:resync", True, 200, False, _order_path("/resync")
    ),
    ("POST", "/api/v1/devices/{mac}/resync"): Op(
        "devices:resync",
        True,
        200,
        False,
        lambda s, o: {"url": f"/api/v1/devices/{_phone(s, o)}/resync"},
    ),
    ("GET", "/api/v1/devices/{mac}"): Op("devices:read", True, 200, False, _mac_path()),
    ("GET", "/api/v1/devices/{mac}/status"): Op(
        "devices:read", True, 200, False, _mac_path("/status")
    ),
    ("GET", "/api/v1/devices/{mac}/files"): Op(
        "devices:read", True, 200, False, _mac_path("/files")
    ),
    ("GET", "/api/v1/devices/{mac}/files/{name}"): Op(
        "devices:read", True, 200, False, lambda s, o: {"url": _first_file(s, o)}
    ),
    ("POST", "/api/v1/devices/{mac}/swap"): Op(
        "devices:bind", True, 200, True, _mac_path("/swap", new_mac="02:00:00:00:0a:01")
    ),
    ("POST", "/api/v1/orders/{order_id}/push"): Op("devices:push", True, 202, True, _push),
    ("GET", "/api/v1/push-jobs/{job_id}"): Op("devices:read", True, 200, False, _job_path()),
    ("GET", "/api/v1/push-jobs/{job_id}/events"): Op(
        "devices:read", True, 200, False, _job_path("/events")
    ),
    ("GET", "/api/v1/devices"): Op(
        "devices:read", False, 200, False, lambda s, o: {"url": "/api/v1/devices?state=armed"}
    ),
    ("GET", "/api/v1/orders/{order_id}/status"): Op(
        "orders:read", True, 200, False, _order_path("/status")
    ),
    ("GET", "/api/v1/push-jobs"): Op(
        "devices:read", False, 200, False, lambda s, o: {"url": "/api/v1/push-jobs"}
    ),
    ("GET", "/api/v1/events"): Op(
        "devices:read",
        True,
        200,
        False,
        lambda s, o: {"url": f"/api/v1/events?order={o}&seconds=1"},
    ),
    ("GET", "/api/v1/audit"): Op(
        "audit:read", False, 200, False, lambda s, o: {"url": "/api/v1/audit"}
    ),
    ("GET", "/api/v1/blocks"): Op(
        "devices:read", False, 200, False, lambda s, o: {"url": "/api/v1/blocks"}
    ),
    ("DELETE", "/api/v1/blocks/{source}"): Op(
        "blocks:lift", False, 200, True, lambda s, o: {"url": f"/api/v1/blocks/{_block(s)}"}
    ),
    ("GET", "/healthz"): Op(None, False, 200, False, lambda s, o: {"url": "/healthz"}),
    ("GET", "/readyz"): Op(None, False, 200, False, lambda s, o: {"url": "/readyz"}),
    ("GET", "/metrics"): Op(None, False, 200, False, lambda s, o: {"url": "/metrics"}),
}


def expected(op: Op, role: str | None, order: str) -> int:
    if op.permission is None:
        return op.success
    if role is None:
        return 401
    if op.permission not in ALLOWED[role]:
        return 403
    if role == "technician" and op.scoped and order not in TECH_ORDERS:
        return 404  # the same answer as an order that does not exist
    return op.success


def test_matrix_covers_every_operation(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    operations = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert operations == set(OPS), "add the new operation (and its permission) to OPS"
    for (method, path), op in OPS.items():
        security = spec["paths"][path][method.lower()].get("security")
        if op.permission is None:
            assert security == [], f"{method} {path} should be documented as public"
        else:
            assert security != [], f"{method} {path} must not be documented as public"


@pytest.mark.parametrize("key", sorted(OPS), ids=lambda k: f"{k[0]} {k[1]}")
def test_access_matrix(
    key: tuple[str, str], store: Store, template_home: Path, tmp_path: Path
) -> None:
    op = OPS[key]
    method = key[0]
    targets = (OWN, OTHER) if op.scoped else (OWN,)
    shared = TestClient(create_app(store.settings, store.inventory, OPEN_LIMITS))
    wrong = []
    n = 0
    for role in ROLES:
        for order in targets:
            if op.mutates:  # every write starts from the same store
                n += 1
                s = copy_store(template_home, tmp_path / f"case{n}")
                client = TestClient(create_app(s.settings, s.inventory, OPEN_LIMITS))
            else:
                s, client = store, shared
            req = op.build(s, order)
            headers = {**req.pop("headers", {}), **s.headers(role)}
            r = client.request(method, headers=headers, **req)
            want = expected(op, role, order)
            if r.status_code == 202:  # a push job: let it end before its store goes away
                assert client.app.state.push_jobs.wait(r.json()["id"], 60)
            if r.status_code != want:
                wrong.append(
                    f"{role or 'anonymous'} on {order}: {r.status_code} != {want}: {r.text[:200]}"
                )
            if role != "admin":
                assert CANARY not in r.text, f"{role} got a secret from {method} {req['url']}"
            if role is None and want == 401:
                assert r.headers["www-authenticate"].startswith("Bearer")
            if op.mutates:
                s.inventory.db.dispose()
    assert not wrong, "\n".join(wrong)


def test_admin_secrets_really_hold_the_canaries(client: TestClient, store: Store) -> None:
    """The canary checks above would pass vacuously if no canary were in the store."""
    r = client.get(f"/api/v1/orders/{OWN}/secrets", headers=store.headers("admin"))
    values = [s["value"] for s in r.json()["secrets"]]
    assert sum(v.startswith(CANARY) for v in values) >= 5
