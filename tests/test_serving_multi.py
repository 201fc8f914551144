"""Several ``provisioner serve`` processes on one PostgreSQL behave as one (DESIGN.md §4):

1. a write through any of them, or the command line, is answered by all within a second;
2. a device bound through server A (its first fetch, from one source) is refused from
   another source on server B;
3. the sweep guard's counts are shared through Redis: a sweep spread over both servers is
   blocked on both once the sum of unknown names reaches the limit.

Real processes, real PostgreSQL (LISTEN/NOTIFY) and Redis on this machine; skipped with a
message where either is absent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pgstore import fresh_database

from provisioner.documents.validate import check_paths
from provisioner.orders.service import OrdersService
from provisioner.render.engine import Renderer
from provisioner.settings import load_settings
from provisioner.store import tokens

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SAMPLES = Path(__file__).resolve().parent.parent / "inventory" / "orders"
ORDER = "WT-2026-000123"
PHONE = "00:80:f0:00:00:02"  # phone-201
NEW = "00:80:f0:00:00:bb"


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_url() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            pass
    except OSError:
        pytest.skip("Redis not reachable at 127.0.0.1:6379")
    return "redis://127.0.0.1:6379/0"


@dataclass
class Server:
    name: str
    http: str
    proc: subprocess.Popen[bytes]


@pytest.fixture
def cluster(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[OrdersService, list[Server]]]:
    redis = _redis_url()
    with fresh_database() as url:
        monkeypatch.setenv("PROVISIONER_DATABASE_URL", url)
        monkeypatch.setenv("PROVISIONER_REDIS_URL", redis)
        inv = OrdersService(load_settings())
        for checked in check_paths([SAMPLES]):
            assert checked.document is not None
            inv.apply(checked.document, actor="test")
        inv.arm(ORDER, 60, actor="test")
        servers = []
        env = {**os.environ, "PROVISIONER_LOG_LEVEL": "WARNING"}
        try:
            for name in ("A", "B"):
                port = _free_port()
                proc = subprocess.Popen(
                    [str(Path(sys.executable).parent / "provisioner"), "serve",
                     "--host", "127.0.0.1", "--http-port", str(port),
                     "--tftp-port", str(_free_port(socket.SOCK_DGRAM))],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                )  # fmt: skip
                servers.append(Server(name, f"http://127.0.0.1:{port}", proc))
            for server in servers:
                _wait_up(server)
            yield inv, servers
        finally:
            for server in servers:
                server.proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.proc.wait(10)
                if server.proc.poll() is None:
                    server.proc.kill()
            inv.db.dispose()


def _wait_up(server: Server) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            err = server.proc.stderr.read().decode() if server.proc.stderr else ""
            pytest.fail(f"server {server.name} exited: {err[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.http}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"server {server.name} did not start")


def _get(server: Server, name: str, source: str) -> httpx.Response:
    """GET a device file from ``source`` (a loopback address of its own)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=5) as client:
        return client.get(f"{server.http}/{name}")


def _within(seconds: float, check: Callable[[], bool], what: str) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not within {seconds} s: {what}"
        time.sleep(0.02)
    return time.monotonic() - start


def _file(mac: str) -> str:
    return mac.replace(":", "") + ".cfg"


def test_a_write_through_either_server_or_the_cli_is_answered_by_both_within_a_second(
    cluster: tuple[OrdersService, list[Server]],
) -> None:
    inv, (a, b) = cluster
    with inv.db.write() as s:
        _, token = tokens.create(s, "noc", name="noc-multi")
    auth = {"authorization": f"Bearer {token}"}
    renderer = Renderer(inv.settings, inv)

    # A bind through server A's API: both serve the new box.
    r = httpx.post(f"{a.http}/api/v1/orders/{ORDER}/bind", headers=auth,
                   json={"mac": NEW, "extension": 209}, timeout=10)  # fmt: skip
    assert r.status_code == 200, r.text
    want = renderer.files_for_mac(NEW)[_file(NEW)]
    for server in (a, b):
        _within(1.0, lambda s=server: _get(s, _file(NEW), "127.0.3.1").content == want,
                f"{server.name} serves the new box")  # fmt: skip

    # A rotation from the command line's side (the orders service): both serve the new file.
    inv.rotate(ORDER, [209], actor="test")
    rotated = renderer.files_for_mac(NEW)[_file(NEW)]
    assert rotated != want
    for server in (a, b):
        _within(1.0, lambda s=server: _get(s, _file(NEW), "127.0.3.1").content == rotated,
                f"{server.name} serves the rotated password")  # fmt: skip

    # A cancel through server B's API: neither serves the order any more.
    r = httpx.post(f"{b.http}/api/v1/orders/{ORDER}/cancel", headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    for server in (a, b):
        _within(1.0, lambda s=server: _get(s, _file(NEW), "127.0.3.1").status_code == 401,
                f"{server.name} stops serving the cancelled order")  # fmt: skip


def test_a_device_bound_through_one_server_is_refused_from_another_source_on_the_other(
    cluster: tuple[OrdersService, list[Server]],
) -> None:
    _, (a, b) = cluster
    first = _get(a, _file(PHONE), "127.0.4.1")
    assert first.status_code == 200  # the first fetch in the window binds it to 127.0.4.1
    time.sleep(1.0)  # what A decided reaches every server within a second
    assert _get(b, _file(PHONE), "127.0.4.2").status_code == 401  # refused at the first try
    assert _get(b, _file(PHONE), "127.0.4.1").status_code == 200  # the bound box, on B too
    assert _get(a, _file(PHONE), "127.0.4.2").status_code == 401


def test_two_first_claims_on_two_servers_end_with_one_holder_on_both(
    cluster: tuple[OrdersService, list[Server]],
) -> None:
    """Two boxes claim one device at the same moment, one through each server: the store's
    conditional UPDATE lets exactly one win, and within a second both servers serve only it."""
    _, (a, b) = cluster
    name = _file("00:80:f0:00:00:03")  # phone-202, not fetched yet
    ra, rb = _get(a, name, "127.0.6.1"), _get(b, name, "127.0.6.2")
    assert (ra.status_code, rb.status_code) == (200, 200)  # each server decided in memory
    time.sleep(1.0)
    answers = {
        (server.name, source): _get(server, name, source).status_code
        for server in (a, b)
        for source in ("127.0.6.1", "127.0.6.2")
    }
    winners = {source for (_, source), code in answers.items() if code == 200}
    assert len(winners) == 1, answers  # one box holds the device on both servers
    winner = winners.pop()
    assert answers == {(s.name, src): 200 if src == winner else 401 for s in (a, b)
                       for src in ("127.0.6.1", "127.0.6.2")}  # fmt: skip


def test_a_sweep_spread_over_both_servers_is_blocked_on_both(
    cluster: tuple[OrdersService, list[Server]],
) -> None:
    _, (a, b) = cluster
    source = f"127.0.5.{uuid.uuid4().int % 200 + 10}"
    # 10 unknown names through each server: neither alone reaches the limit of 20, together
    # they do (the 20th is counted in Redis off the request path, then both block).
    for i in range(10):
        assert _get(a, f"0080f0e1{i:04x}.cfg", source).status_code == 401
    for i in range(10):
        assert _get(b, f"0080f0e2{i:04x}.cfg", source).status_code == 401
    for server in (a, b):
        _within(1.5, lambda s=server: _get(s, "0080f0e3ffff.cfg", source).status_code == 429,
                f"{server.name} blocks the sweeping source")  # fmt: skip
    # Another source is unaffected.
    assert _get(a, "0080f0e3ffff.cfg", "127.0.5.250").status_code == 401
