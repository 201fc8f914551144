"""The API under a real uvicorn on 127.0.0.1: concurrent binds, and schemathesis per role."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apistore import (
    CANARY,
    OPEN_LIMITS,
    OTHER,
    OWN,
    RACE,
    RACE_QUOTA,
    Store,
    copy_store,
    race_document,
    stored_push_job,
)
from livehttp import LiveServer
from sqlalchemy import func, select

from provisioner.api.app import create_app
from provisioner.store.models import AuditEvent, Device, Order, Terminal

PHONE = "alcatel-temporis-ip150"


class Recorder:
    """ASGI wrapper keeping every response body with the role that asked (canary grep)."""

    def __init__(self, app: Any, roles: dict[str, str]):
        self.app = app
        self.roles = roles  # "Bearer <token>" -> role
        self.bodies: list[tuple[str, str, bytes]] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        role = self.roles.get(auth, "anonymous")
        chunks: list[bytes] = []

        async def keep(message: Any) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, keep)
        with self._lock:
            self.bodies.append((role, scope["path"], b"".join(chunks)))

    def leaks(self, role: str) -> list[str]:
        with self._lock:
            return [p for r, p, b in self.bodies if r == role and CANARY.encode() in b]

    def count(self, role: str) -> int:
        with self._lock:
            return sum(1 for r, _, _ in self.bodies if r == role)


# ------------------------------------------------------------------ concurrent binds


@pytest.mark.parametrize("same_extension", [False, True], ids=["20-extensions", "1-extension"])
def test_parallel_binds_never_pass_the_terminal_limit(store: Store, same_extension: bool) -> None:
    app = create_app(store.settings, store.inventory, OPEN_LIMITS)
    n = 20
    barrier = threading.Barrier(n)
    statuses: dict[int, int] = {}

    def bind(i: int, url: str) -> None:
        body = {"mac": f"02:00:00:00:0b:{i:02x}", "extension": 300 if same_extension else 300 + i}
        body["model"] = PHONE
        with httpx.Client(base_url=url, headers=store.headers("noc"), timeout=60) as c:
            barrier.wait()
            statuses[i] = c.post(f"/api/v1/orders/{RACE}/bind", json=body).status_code

    with LiveServer(app) as server:
        threads = [threading.Thread(target=bind, args=(i, server.url)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    allowed = 1 if same_extension else RACE_QUOTA
    ok = sorted(i for i, s in statuses.items() if s == 200)
    assert len(statuses) == n
    assert len(ok) == allowed, statuses
    assert all(s == 409 for i, s in statuses.items() if i not in ok), statuses
    with store.inventory.db.read() as session:
        order = session.scalar(select(Order).where(Order.order_id == RACE))
        assert order is not None
        terminals = session.scalars(select(Terminal).where(Terminal.order_pk == order.id)).all()
        assert len(terminals) == allowed
        assert len({t.extension_pk for t in terminals}) == len(terminals)  # one per extension
        bound = {d.mac for d in order.devices if d.mac}
        assert bound == {f"02:00:00:00:0b:{i:02x}" for i in ok}
        orphans = session.scalar(
            select(func.count(Device.id)).where(
                Device.order_pk == order.id, ~Device.terminals.any(), Device.model == PHONE
            )
        )
        assert orphans == 0  # no half-made device from a refused bind


def test_parallel_creates_of_one_order_make_it_once(store: Store) -> None:
    """Ten clients POST the same new order at once: one 201, nine 409, one audit row."""
    new_id = "WT-2026-800002"
    text = race_document().replace(RACE, new_id).replace("+3902111", "+3902333")
    app = create_app(store.settings, store.inventory, OPEN_LIMITS)
    n = 10
    barrier = threading.Barrier(n)
    statuses: list[int] = []
    headers = {**store.headers("noc"), "Content-Type": "application/yaml"}

    def create(url: str) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            barrier.wait()
            statuses.append(c.post("/api/v1/orders", content=text).status_code)

    with LiveServer(app) as server:
        threads = [threading.Thread(target=create, args=(server.url,)) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert sorted(statuses) == [201] + [409] * (n - 1), statuses
    with store.inventory.db.read() as session:
        created = session.scalar(
            select(func.count(AuditEvent.id)).where(
                AuditEvent.order_id == new_id, AuditEvent.action == "order.created"
            )
        )
    assert created == 1


# ------------------------------------------------------------------ schemathesis

# Every role runs every operation at 100 examples (the floor); measured on 2 cores,
# the eight processes below take about three and a half minutes together.
# PROVISIONER_ST_MAX_EXAMPLES=N runs every role at N instead (a nightly job's knob).
ROLES = ("admin", "noc", "viewer", "technician")
EXAMPLES = int(os.environ.get("PROVISIONER_ST_MAX_EXAMPLES") or 100)
# The order-document operations cost the most to generate and judge: each role runs them
# in a process of its own, so they do not hold up the other operations.
DOCUMENT_OPERATIONS = ("create_order", "replace_order")
ST_TOML = """
[dictionaries.order_ids]
values = {orders}

[dictionaries.macs]
values = {macs}

[dictionaries.job_ids]
values = {jobs}

[parameters]
"path.order_id" = {{ dictionary = "order_ids", probability = 0.5 }}
"path.mac" = {{ dictionary = "macs", probability = 0.5 }}
"path.job_id" = {{ dictionary = "job_ids", probability = 0.5 }}

# What JSON Schema cannot say, answered 422 with the violations: the offer's rules for an
# order document (numbers held, plan limits, ...), and for a push which device ids of the
# order are switches or IADs and which addresses are inside push_networks.
[[operations]]
include-path-regex = "^/api/v1/orders(/\\\\{{order_id\\\\}})?$"
include-method = ["POST", "PUT"]
# 412: a PUT whose If-Match names another version of the order (the header is schema-valid).
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "401", "403", "404", "409", "412", "422"
]

# 409: a resync of a cancelled order, of one with no phone bound, or of a switch or an IAD.
[[operations]]
include-path-regex = "/resync$"
include-method = ["POST"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409"]

# The order's event stream stays open until the client goes (or ?seconds= passed): what a
# case can check is in its first bytes, so schemathesis waits a moment, not its 10 s.
[[operations]]
include-path = "/api/v1/events"
request-timeout = 0.5

[[operations]]
include-path-regex = "^/api/v1/orders/\\\\{{order_id\\\\}}/push$"
include-method = ["POST"]
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "401", "403", "404", "409", "422", "429"
]
"""
# Where schemathesis' pushes may go: one loopback address with nothing of ours on it, so a
# generated target fails at connect (and never reaches a service of this machine's).
ST_PUSH_NETWORKS = "127.0.0.254/32"


@pytest.fixture(scope="module")
def live(template_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    s = copy_store(template_home, tmp_path_factory.mktemp("live") / "home", ST_PUSH_NETWORKS)
    s.jobs = [stored_push_job(s.inventory, oid) for oid in (OWN, OTHER)]
    recorder = Recorder(
        create_app(s.settings, s.inventory, OPEN_LIMITS),
        {f"Bearer {tok}": role for role, tok in s.tokens.items()},
    )
    with LiveServer(recorder) as server:
        yield s, server, recorder
    s.inventory.db.dispose()


def _st() -> list[str]:
    exe = Path(sys.executable).with_name("st")
    if not exe.exists():
        pytest.skip("schemathesis is not installed (pip install 'schemathesis>=4')")
    return [str(exe)]


def _command(
    store: Store, server: LiveServer, role: str, ops: list[str], config: Path
) -> list[str]:
    return [
        *_st(),
        "--config-file",
        str(config),
        "run",
        f"{server.url}/api/v1/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {store.tokens[role]}",
        "--max-examples",
        str(EXAMPLES),
        # One worker per process: with two threads, hypothesis' ast.parse trips CPython
        # 3.11's "AST constructor recursion depth mismatch". Processes give the parallelism.
        "--workers",
        "1",
        "--seed",
        os.environ.get("PROVISIONER_ST_SEED", "20261122"),
        "--no-color",
        *ops,
    ]


def _runs() -> list[tuple[str, str, list[str]]]:
    """(label, role, operation filter): two processes per role, every operation covered."""
    only_docs = [a for op in DOCUMENT_OPERATIONS for a in ("--include-operation-id", op)]
    no_docs = [a for op in DOCUMENT_OPERATIONS for a in ("--exclude-operation-id", op)]
    runs = []
    for role in ROLES:
        runs += [(f"{role}-documents", role, only_docs), (role, role, no_docs)]
    return runs


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_schemathesis_every_role(live: Any, tmp_path: Path) -> None:
    """Schemathesis once per role, all at once (the server sees them interleaved)."""
    store, server, recorder = live
    config = tmp_path / "schemathesis.toml"
    quoted = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
    config.write_text(
        ST_TOML.format(
            orders=quoted([OWN, OTHER, RACE]),
            macs=quoted(store.macs[OWN][:3] + store.macs[OTHER][:3]),
            jobs=quoted(store.jobs),
        )
    )
    started = time.monotonic()
    procs = {
        label: subprocess.Popen(
            _command(store, server, role, ops, config),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for label, role, ops in _runs()
    }
    failed = []
    for label, proc in procs.items():
        try:
            output, _ = proc.communicate(timeout=840)
        finally:
            proc.kill()
        (tmp_path / f"{label}.txt").write_text(output)  # the whole report, for a failing run
        summary = re.search(r"(\d+) generated", output)
        print(
            f"schemathesis {label}: exit {proc.returncode} after {time.monotonic() - started:.0f}s,"
            f" {summary.group(0) if summary else '?'} cases"
        )
        if proc.returncode != 0:
            failed.append(f"--- {label} ({tmp_path / label}.txt):\n{output[-5000:]}")
    for role in ROLES:
        print(f"  {role}: {EXAMPLES} examples/operation, {recorder.count(role)} requests")
    assert not failed, "\n".join(failed)
    for role in ROLES:
        assert recorder.count(role) > 100  # the run really talked to the server
        if role != "admin":  # admin may read secrets (GET /orders/{id}/secrets)
            assert not recorder.leaks(role), f"canary secrets in responses to {role}"
    assert not recorder.leaks("anonymous")
