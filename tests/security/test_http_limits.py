"""HTTP request heads are bounded in size, field count and time; idle and surplus connections
are closed (DESIGN.md §5, issue 11 item 7). Against a real uvicorn on loopback, configured as
``serve`` and ``api`` configure theirs, and against both commands themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from livehttp import LiveServer
from typer.testing import CliRunner

from provisioner.api.app import create_app
from provisioner.cli.app import app as cli
from provisioner.orders.service import OrdersService
from provisioner.render.engine import Renderer
from provisioner.serving.http import DeviceHttpApp
from provisioner.serving.stack import build_service
from provisioner.store import tokens

CURL = shutil.which("curl")
PHONE_MAC = "00:80:f0:00:00:01"  # phone-200 of WT-2026-000123
PHONE_FILE = "0080f0000001.cfg"
HEADER_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 1.0


@dataclasses.dataclass
class Stack:
    server: LiveServer
    inventory: OrdersService
    service: Any

    @property
    def port(self) -> int:
        return self.server.port


@contextlib.contextmanager
def _stack(inventory: OrdersService, tmp_path: Path, **limits: Any) -> Iterator[Stack]:
    """Device files and the REST API on one port, as ``serve`` runs them."""
    settings = inventory.settings.model_copy(
        update={
            "http_header_timeout": HEADER_TIMEOUT,
            "http_keepalive_timeout": KEEPALIVE_TIMEOUT,
            **limits,
        }
    )
    root = tmp_path / "tftp_root"
    root.mkdir(exist_ok=True)
    service = build_service(inventory, root)
    app = DeviceHttpApp(service, create_app(settings, inventory))
    try:
        with LiveServer(app, settings) as server:
            yield Stack(server, inventory, service)
    finally:
        service.close()


@pytest.fixture
def stack(sample_inventory: OrdersService, tmp_path: Path) -> Iterator[Stack]:
    with _stack(sample_inventory, tmp_path) as s:
        yield s


def _connect(port: int, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after its answer also ends it)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    return int(answer[9:12])


def _request(headers: list[bytes], path: bytes = b"/healthz") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def _send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    def send() -> None:
        with contextlib.suppress(OSError):  # the server may close before we are done
            sock.sendall(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------- size


def test_a_one_megabyte_header_gets_431_and_the_connection_closes(stack: Stack) -> None:
    with _connect(stack.port) as sock:
        started = time.monotonic()
        sender = _send_in_background(
            sock, _request([b"Host: x", b"X-Big: " + b"a" * 1024 * 1024, b"Connection: close"])
        )
        answer = _read_to_eof(sock)
        elapsed = time.monotonic() - started
        sender.join(5)
    assert _status(answer) == 431
    assert b"connection: close" in answer.lower()
    assert elapsed < HEADER_TIMEOUT, f"answered after {elapsed:.2f} s"


def test_a_header_is_refused_once_it_passes_the_limit_not_when_it_ends(stack: Stack) -> None:
    """The server answers while the header is still arriving: it did not wait to buffer it."""
    limit = stack.inventory.settings.http_max_header_bytes
    with _connect(stack.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * limit))
        started = time.monotonic()
        answer = _read_to_eof(sock)  # the header line is never finished
        elapsed = time.monotonic() - started
    assert _status(answer) == 431
    assert elapsed < 1.0, f"answered after {elapsed:.2f} s"


def test_ten_thousand_headers_are_refused(stack: Stack) -> None:
    many = [b"Host: x"] + [b"X-%d: 1" % i for i in range(10_000)]
    with _connect(stack.port) as sock:
        sender = _send_in_background(sock, _request(many))
        answer = _read_to_eof(sock)
        sender.join(5)
    assert _status(answer) == 431


def test_the_header_count_limit_holds_even_when_the_bytes_would_fit(
    sample_inventory: OrdersService, tmp_path: Path
) -> None:
    with _stack(sample_inventory, tmp_path, http_max_header_bytes=4 * 1024 * 1024) as s:
        limit = s.inventory.settings.http_max_headers
        at_limit = [b"Host: x", b"Connection: close"] + [b"X-%d: 1" % i for i in range(limit - 2)]
        over = [*at_limit, b"X-one-more: 1"]
        many = at_limit + [b"X-%d: 1" % i for i in range(10_000)]
        answers = []
        for headers in (at_limit, over, many):
            with _connect(s.port) as sock:
                sender = _send_in_background(sock, _request(headers))
                answers.append(_status(_read_to_eof(sock)))
                sender.join(5)
    assert answers == [200, 431, 431]


# ---------------------------------------------------------------------- time


def test_a_client_sending_one_header_byte_per_second_is_cut_at_the_header_timeout(
    stack: Stack,
) -> None:
    stop = threading.Event()
    with _connect(stack.port, timeout=HEADER_TIMEOUT + 10) as sock:

        def trickle() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                while not stop.wait(1.0):
                    sock.sendall(b"a")

        started = time.monotonic()
        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        answer = _read_to_eof(sock)
        closed_after = time.monotonic() - started
        stop.set()
        sender.join(5)
    assert _status(answer) == 408
    assert HEADER_TIMEOUT - 0.2 <= closed_after <= HEADER_TIMEOUT + 1.0, closed_after


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(stack: Stack) -> None:
    with _connect(stack.port, timeout=HEADER_TIMEOUT + 10) as sock:
        started = time.monotonic()
        answer = _read_to_eof(sock)
        closed_after = time.monotonic() - started
    assert answer == b""
    assert closed_after <= HEADER_TIMEOUT + 1.0, closed_after


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(stack: Stack) -> None:
    with _connect(stack.port, timeout=KEEPALIVE_TIMEOUT + 10) as sock:
        for _ in range(2):  # the connection is reused while it is busy
            sock.sendall(_request([b"Host: x"]))
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            assert _status(head) == 200
        answered = time.monotonic()
        rest = _read_to_eof(sock)
        idle = time.monotonic() - answered
    assert b"HTTP/1.1" not in rest
    assert KEEPALIVE_TIMEOUT - 0.2 <= idle <= KEEPALIVE_TIMEOUT + 1.0, idle


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_the_https_listener_has_the_same_limits(
    sample_inventory: OrdersService, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    settings = sample_inventory.settings.model_copy(update={"http_header_timeout": HEADER_TIMEOUT})
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    app = DeviceHttpApp(build_service(sample_inventory, tmp_path))
    with LiveServer(app, settings, ssl_certfile=str(cert), ssl_keyfile=str(key)) as server:
        answers = []
        for payload in (
            _request([b"Host: x", b"Connection: close"], b"/nothing-here.txt"),
            _request([b"Host: x", b"X-Big: " + b"a" * 1024 * 1024]),
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a",  # and nothing more
        ):
            with tls.wrap_socket(_connect(server.port, timeout=HEADER_TIMEOUT + 10)) as sock:
                # One thread per TLS socket (OpenSSL does not share one between threads): the
                # server keeps reading and dropping after a refusal, so sending ends.
                started = time.monotonic()
                with contextlib.suppress(OSError):
                    sock.sendall(payload)
                answer = _read_to_eof(sock)
                answers.append((_status(answer), time.monotonic() - started))
    assert [status for status, _ in answers] == [404, 431, 408]
    assert answers[1][1] < 1.0
    assert HEADER_TIMEOUT - 0.2 <= answers[2][1] <= HEADER_TIMEOUT + 1.0


def test_a_client_trickling_a_body_it_was_answered_for_is_closed_when_idle(stack: Stack) -> None:
    """A POST to the device path is answered 405 at once; dribbling the announced body after
    that must not keep the connection open."""
    stop = threading.Event()
    with _connect(stack.port, timeout=KEEPALIVE_TIMEOUT + 10) as sock:
        sock.sendall(
            b"POST /0080f0000001.cfg HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
        )

        def trickle() -> None:
            with contextlib.suppress(OSError):
                while not stop.wait(0.3):
                    sock.sendall(b"a")

        started = time.monotonic()
        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        answer = _read_to_eof(sock)
        closed_after = time.monotonic() - started
        stop.set()
        sender.join(5)
    assert _status(answer) == 405
    assert closed_after <= KEEPALIVE_TIMEOUT + 1.0, closed_after


# ---------------------------------------------------------------------- connections


def test_connections_past_the_limit_get_503_and_are_closed(
    sample_inventory: OrdersService, tmp_path: Path
) -> None:
    with _stack(sample_inventory, tmp_path, http_max_connections=3) as s:
        held = [_connect(s.port) for _ in range(3)]
        try:
            time.sleep(0.2)  # the server has accepted them
            with _connect(s.port) as extra:
                answer = _read_to_eof(extra)
            assert _status(answer) == 503
            assert b"retry-after" in answer.lower()
            held.pop().close()
            time.sleep(0.2)
            with _connect(s.port) as again:
                again.sendall(_request([b"Host: x", b"Connection: close"]))
                assert _status(_read_to_eof(again)) == 200
        finally:
            for sock in held:
                sock.close()


# ---------------------------------------------------------------------- normal use


@pytest.mark.skipif(not CURL, reason="needs curl (apt-get install curl)")
def test_devices_and_the_rest_api_are_served_as_before(stack: Stack, tmp_path: Path) -> None:
    inv = stack.inventory
    inv.arm("WT-2026-000123", 30, actor="test")
    expected = Renderer(inv.settings, inv).files_for_mac(PHONE_MAC)[PHONE_FILE]
    with inv.db.write() as session:
        token = tokens.create(session, "viewer", name="limits")[1]
    url = f"http://127.0.0.1:{stack.port}"
    out = tmp_path / "phone.cfg"
    # A device fetch with a generous head: 90 fields and an 8 KiB cookie are still fine.
    extra = [f"-HX-Extra-{i}: {i}" for i in range(90)] + [f"-HCookie: c={'x' * 8192}"]
    fetch = subprocess.run(
        [CURL, "-s", "--max-time", "10", "-o", str(out), "-w", "%{http_code}", *extra,
         f"{url}/{PHONE_FILE}"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert fetch.stdout == b"200", fetch.stderr
    assert out.read_bytes() == expected
    api = subprocess.run(
        [CURL, "-s", "--max-time", "10", "-H", f"Authorization: Bearer {token}",
         f"{url}/api/v1/orders/WT-2026-000123", f"{url}/api/v1/orders?limit=50"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert api.returncode == 0, api.stderr
    assert api.stdout.count(b'"WT-2026-000123"') >= 2  # both answers, on one reused connection


# ---------------------------------------------------------------------- settings and commands

LIMIT_SETTINGS = (
    "HTTP_MAX_HEADER_BYTES",
    "HTTP_MAX_HEADERS",
    "HTTP_HEADER_TIMEOUT",
    "HTTP_KEEPALIVE_TIMEOUT",
    "HTTP_MAX_CONNECTIONS",
)


@pytest.mark.parametrize("value", ["0", "-1"])
@pytest.mark.parametrize("name", LIMIT_SETTINGS)
def test_a_limit_of_zero_or_below_is_refused_at_start_in_one_line(
    home: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"PROVISIONER_{name}", value)
    # An address nobody can listen on: a server that ignored the setting fails anyway, and
    # this test must not hang serving.
    for command in (["serve", "--host", "256.0.0.1"], ["api", "--host", "256.0.0.1"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.output
        assert lines[0].startswith(f"error: setting PROVISIONER_{name}: ")
        assert lines[0].endswith("is not a positive number")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", ["serve", "api"])
def test_serve_and_api_listen_with_the_limits(home: Path, command: str) -> None:
    """The commands themselves (not only the test server) carry the limits."""
    port = _free_port()
    args = {
        "serve": ["serve", "--host", "127.0.0.1", "--http-port", str(port), "--tftp-port",
                  str(_free_port())],
        "api": ["api", "--host", "127.0.0.1", "--port", str(port)],
    }[command]  # fmt: skip
    env = {**os.environ, "PROVISIONER_HOME": str(home), "PROVISIONER_HTTP_MAX_HEADER_BYTES": "1024"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from provisioner.cli.app import app; app()", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                sock = _connect(port)
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        with sock:
            sock.sendall(_request([b"Host: x", b"Connection: close"]))
            assert _status(_read_to_eof(sock)) == 200
        with _connect(port) as sock:
            _send_in_background(sock, _request([b"Host: x", b"X-Big: " + b"a" * 2048]))
            assert _status(_read_to_eof(sock)) == 431
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
