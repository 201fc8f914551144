"""``provisioner serve --workers N``: N processes share the ports and behave as one server.

Real processes on loopback, on the embedded SQLite store: every worker takes connections
(the kernel spreads them over one listener per worker), every worker answers a write within
a second, TFTP is answered, a signal stops them all, and a worker that dies takes the
others down with an exit code a process manager sees.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.documents.validate import check_paths
from provisioner.orders.service import OrdersService
from provisioner.settings import load_settings

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parent.parent / "inventory" / "orders"
ORDER = "WT-2026-000123"
FILE = "0080f0000002.cfg"  # phone-201's file
CONNECTIONS = 32
EXE = str(Path(sys.executable).parent / "provisioner")


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Workers:
    proc: subprocess.Popen[bytes]
    http_port: int
    tftp_port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> list[int]:
        return [
            int(pid)
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir()
            for pid in (task / "children").read_text().split()
        ]


@pytest.fixture
def workers(home: Path, tmp_path: Path) -> Iterator[Workers]:
    inv = OrdersService(load_settings())
    for checked in check_paths([SAMPLES]):
        assert checked.document is not None
        inv.apply(checked.document, actor="test")
    inv.arm(ORDER, 60, actor="test")
    inv.db.dispose()
    http_port, tftp_port = _free_port(), _free_port(socket.SOCK_DGRAM)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [EXE, "serve", "--workers", "2", "--host", "127.0.0.1", "--no-api",
             "--http-port", str(http_port), "--tftp-port", str(tftp_port)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    w = Workers(proc, http_port, tftp_port, log)
    try:
        deadline = time.monotonic() + 30
        while "worker 1: index" not in w.output() or "worker 2: index" not in w.output():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"serve --workers 2 did not start:\n{w.output()}")
            time.sleep(0.1)
        yield w
    finally:
        if proc.poll() is None:
            proc.kill()
            for pid in w.children() if Path(f"/proc/{proc.pid}").exists() else []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        proc.wait(10)


def _owner_pids(server_port: int, client_ports: set[int], pids: list[int]) -> dict[int, int]:
    """Which process holds the server side of each connection: client port -> pid."""
    inodes: dict[str, int] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        local, remote = f[1].split(":"), f[2].split(":")
        if int(local[1], 16) == server_port and int(remote[1], 16) in client_ports:
            inodes[f"socket:[{f[9]}]"] = int(remote[1], 16)
    owners = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target in inodes:
                    owners[inodes[target]] = pid
    return owners


def _udp_owners(port: int, pids: list[int]) -> list[int]:
    """The processes holding a UDP socket bound to 127.0.0.1:``port`` (one per socket)."""
    local = f"0100007F:{port:04X}"
    inodes = {
        f"socket:[{f[9]}]"
        for f in (line.split() for line in Path("/proc/net/udp").read_text().splitlines()[1:])
        if f[1] == local
    }
    owners = []
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    owners.append(pid)
    return owners


def _get(conn: http.client.HTTPConnection) -> tuple[int, bytes]:
    conn.request("GET", f"/{FILE}")
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_every_worker_serves_and_follows_a_write_within_a_second(workers: Workers) -> None:
    conns = [http.client.HTTPConnection("127.0.0.1", workers.http_port, timeout=5)
             for _ in range(CONNECTIONS)]  # fmt: skip
    try:
        answers = [_get(c) for c in conns]  # kept alive: each stays with the worker it hit
        assert {status for status, _ in answers} == {200}
        assert len({body for _, body in answers}) == 1
        body = answers[0][1]
        assert b"sip" in body.lower()

        # Every worker took connections (one listener each; the kernel spreads by port).
        pids = workers.children()
        assert len(pids) == 2
        client_ports = {c.sock.getsockname()[1] for c in conns if c.sock is not None}
        owners = _owner_pids(workers.http_port, client_ports, pids)
        assert set(owners.values()) == set(pids), owners

        # Every worker listens for TFTP too, and a client (each curl its own port, the
        # kernel's choice of worker) gets the same bytes.
        assert set(_udp_owners(workers.tftp_port, pids)) == set(pids)
        for _ in range(6):
            tftp = subprocess.run(
                ["curl", "-sS", "--max-time", "10",
                 f"tftp://127.0.0.1:{workers.tftp_port}/{FILE}"],
                capture_output=True, timeout=20, check=False,
            )  # fmt: skip
            assert tftp.stdout == body, tftp.stderr

        # A write through the command line: both workers stop serving within a second.
        subprocess.run([EXE, "cancel", ORDER], check=True, capture_output=True, timeout=60)
        cancelled = time.monotonic()
        statuses: list[int] = []
        while time.monotonic() - cancelled < 1.0:
            statuses = [_get(c)[0] for c in conns]
            if 200 not in statuses:
                break
            time.sleep(0.05)
        assert 200 not in statuses, f"still served {statuses.count(200)} times after 1 s"
        assert set(statuses) <= {401, 404}
    finally:
        for c in conns:
            c.close()

    # A signal stops every process, and the command says so.
    workers.proc.send_signal(signal.SIGTERM)
    assert workers.proc.wait(15) == 0, workers.output()
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert workers.output().rstrip().endswith("stopped")


def test_a_dead_worker_stops_the_others_and_the_command_fails(workers: Workers) -> None:
    first, second = sorted(workers.children())
    os.kill(second, signal.SIGKILL)
    assert workers.proc.wait(15) == 1, workers.output()
    assert "ended (exit -9): stopping the others" in workers.output()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{first}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{first}").exists(), "the other worker outlived the command"


def test_workers_out_of_range_are_refused_in_one_line(home: Path) -> None:
    res = subprocess.run([EXE, "serve", "--workers", "0"], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert res.returncode != 0
    assert "--workers 0: must be 1 to 64" in res.stderr + res.stdout
