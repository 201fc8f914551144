"""Every write, whichever way it comes (CLI, API, a technician's scoped token), is answered
by a running server within a second: over TFTP and HTTP it hands out exactly what the store
renders now, and nothing for a cancelled order, an unbound or a swapped-out box.

The leak this guards: a cancelled order (SIP passwords inside) kept being served, and a
swapped-out MAC kept its files while the new box got 401, because the serving cache was
dropped only by writers that remembered to bump a timestamp by hand.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from liveserve import Stack, serve_stack
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.orders.service import OrdersService
from provisioner.render.engine import Renderer
from provisioner.store import tokens

ORDER = "WT-2026-000123"
PHONE = "00:80:f0:00:00:02"  # phone-201, extension 201 (Giulia Rossi)
NEW = "00:80:f0:00:00:aa"  # a replacement box
OTHER_ORDER = "WT-2026-000104"  # not armed in these tests until someone arms it
OTHER_PHONE = "00:80:f0:20:00:01"
SAMPLES = Path(__file__).resolve().parents[2] / "inventory" / "orders"
CURL = shutil.which("curl")

pytestmark = pytest.mark.skipif(not CURL, reason="needs curl (apt-get install curl)")


@pytest.fixture
def stack(sample_inventory: OrdersService, tmp_path: Path) -> Iterator[Stack]:
    root = tmp_path / "tftp_root"
    root.mkdir()
    sample_inventory.arm(ORDER, 60, actor="test")
    with serve_stack(sample_inventory, root, api=True) as st:
        yield st


def _file(mac: str) -> str:
    return mac.replace(":", "") + ".cfg"


def _expected(inv: OrdersService, mac: str) -> bytes | None:
    """What the store says a device with this MAC gets now (from 127.0.0.1, in its window)."""

    files = Renderer(inv.settings, inv).files_for_mac(mac)
    if _file(mac) not in files:
        return None  # unknown, unbound, swapped out or cancelled
    with inv.db.read() as s:
        order_id = inv.find_device(s, mac).order.order_id
    row = next(r for r in inv.status(order_id) if r.identity == mac)
    return files[_file(mac)] if row.window_until is not None else None


def _served(stack: Stack, mac: str) -> tuple[bytes | None, bytes | None]:
    """(TFTP answer, HTTP answer) of the running server; None for "no file"."""
    assert CURL
    name = _file(mac)
    tftp = subprocess.run([CURL, "-s", "--max-time", "5", f"tftp://127.0.0.1:{stack.tftp_port}/{name}"],
                          capture_output=True, timeout=30, check=False)  # fmt: skip
    http = httpx.get(f"{stack.http}/{name}", timeout=5)
    return (
        tftp.stdout if tftp.returncode == 0 else None,
        http.content if http.status_code == 200 else None,
    )


def _matches_store_within(stack: Stack, macs: list[str], seconds: float = 1.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        want = {m: _expected(stack.inventory, m) for m in macs}
        got = {m: _served(stack, m) for m in macs}
        wrong = {
            m: f"tftp={'file' if got[m][0] else 'none'} http={'file' if got[m][1] else 'none'} "
            f"store={'file' if want[m] else 'none'}"
            for m in macs
            if got[m] != (want[m], want[m])
        }
        if not wrong:
            return
        assert time.monotonic() < deadline, f"still stale after {seconds} s: {wrong}"
        time.sleep(0.05)


def _cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output


def _api(stack: Stack, role: str) -> Callable[..., httpx.Response]:
    with stack.inventory.db.write() as s:
        orders = [ORDER, OTHER_ORDER] if role == "technician" else None
        _, token = tokens.create(s, role, name=f"{role}-test", orders=orders)

    def call(method: str, path: str, **kw: Any) -> httpx.Response:
        r = httpx.request(method, f"{stack.http}/api/v1{path}", timeout=10,
                          headers={"authorization": f"Bearer {token}", **kw.pop("headers", {})},
                          **kw)  # fmt: skip
        assert r.status_code < 300, r.text
        return r

    return call


def _renamed_document(tmp_path: Path) -> Path:
    doc = yaml.safe_load((SAMPLES / f"{ORDER}.yaml").read_text())
    ext = next(e for e in doc["extensions"] if e["short"] == 201)
    ext["name"] = "Giulia Rossi Bianchi"
    path = tmp_path / "renamed.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# (how the write is made, the devices whose answers it changes)
Write = Callable[[Stack, Path], None]


def _cli_apply(st: Stack, tmp: Path) -> None:
    _cli("apply", str(_renamed_document(tmp)))


def _cli_bind(st: Stack, tmp: Path) -> None:
    _cli("bind", ORDER, "--mac", NEW, "--extension", "209")


def _cli_unbind(st: Stack, tmp: Path) -> None:
    _cli("unbind", ORDER, "--mac", PHONE)


def _cli_swap(st: Stack, tmp: Path) -> None:
    _cli("swap", ORDER, "--old", PHONE, "--new", NEW)


def _cli_cancel(st: Stack, tmp: Path) -> None:
    _cli("cancel", ORDER)


def _cli_arm(st: Stack, tmp: Path) -> None:
    _cli("arm", OTHER_ORDER, "--minutes", "30")


def _cli_rotate(st: Stack, tmp: Path) -> None:
    _cli("rotate", ORDER, "--extension", "201")


def _api_put(role: str) -> Write:
    def write(st: Stack, tmp: Path) -> None:
        body = _renamed_document(tmp).read_bytes()
        _api(st, role)("PUT", f"/orders/{ORDER}", content=body,
                       headers={"content-type": "application/yaml"})  # fmt: skip

    return write


def _api_write(role: str, method: str, path: str, **kw: Any) -> Write:
    def write(st: Stack, tmp: Path) -> None:
        _api(st, role)(method, path, **kw)

    return write


def _api_bind(role: str) -> Write:
    return _api_write(role, "POST", f"/orders/{ORDER}/bind", json={"mac": NEW, "extension": 209})


def _api_unbind(role: str) -> Write:
    return _api_write(role, "POST", f"/orders/{ORDER}/unbind", json={"mac": PHONE})


def _api_swap(role: str) -> Write:
    return _api_write(role, "POST", f"/devices/{PHONE}/swap", json={"new_mac": NEW})


def _api_cancel(role: str) -> Write:
    return _api_write(role, "POST", f"/orders/{ORDER}/cancel")


def _api_arm_order(role: str) -> Write:
    return _api_write(role, "POST", f"/orders/{OTHER_ORDER}/arm", json={"minutes": 30})


def _api_arm_device(role: str) -> Write:
    return _api_write(role, "POST", f"/devices/{OTHER_PHONE}/arm", json={"minutes": 30})


WRITES: dict[str, tuple[Write, list[str]]] = {
    "cli apply": (_cli_apply, [PHONE]),
    "cli bind": (_cli_bind, [NEW]),
    "cli unbind": (_cli_unbind, [PHONE]),
    "cli swap": (_cli_swap, [PHONE, NEW]),
    "cli cancel": (_cli_cancel, [PHONE]),
    "cli arm": (_cli_arm, [OTHER_PHONE]),
    "cli rotate": (_cli_rotate, [PHONE]),
    "api put (noc)": (_api_put("noc"), [PHONE]),
    "api bind (noc)": (_api_bind("noc"), [NEW]),
    "api unbind (noc)": (_api_unbind("noc"), [PHONE]),
    "api swap (noc)": (_api_swap("noc"), [PHONE, NEW]),
    "api cancel (noc)": (_api_cancel("noc"), [PHONE]),
    "api arm order (noc)": (_api_arm_order("noc"), [OTHER_PHONE]),
    "api arm device (noc)": (_api_arm_device("noc"), [OTHER_PHONE]),
    "api bind (technician)": (_api_bind("technician"), [NEW]),
    "api unbind (technician)": (_api_unbind("technician"), [PHONE]),
    "api swap (technician)": (_api_swap("technician"), [PHONE, NEW]),
    "api arm order (technician)": (_api_arm_order("technician"), [OTHER_PHONE]),
    "api arm device (technician)": (_api_arm_device("technician"), [OTHER_PHONE]),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_running_server_answers_as_the_store_says_within_a_second_of_every_write(
    write: str, stack: Stack, tmp_path: Path
) -> None:
    do, macs = WRITES[write]
    before = {m: _expected(stack.inventory, m) for m in macs}
    # The server has answered (and so cached) the old state before the write.
    for mac in macs:
        assert _served(stack, mac) == (before[mac], before[mac])
    do(stack, tmp_path)
    after = {m: _expected(stack.inventory, m) for m in macs}
    assert after != before, "the write must change what the store says"
    _matches_store_within(stack, macs, 1.0)


def test_a_swapped_in_box_fetches_inside_the_same_window_and_the_old_one_gets_nothing(
    stack: Stack,
) -> None:
    inv = stack.inventory
    old_file = _served(stack, PHONE)[0]
    assert old_file is not None  # the old box fetched, so the device is bound to its source
    _cli("swap", ORDER, "--old", PHONE, "--new", NEW)
    _matches_store_within(stack, [PHONE, NEW], 1.0)
    # The new box's file is the same device's (same extension and secrets), no re-arm needed,
    # and its first fetch is what the status shows: the old box's traces are gone.
    tftp, _ = _served(stack, NEW)
    assert tftp is not None and b"Giulia Rossi" in tftp
    stack.service.flush()

    row = next(r for r in inv.status(ORDER) if r.device_id == "phone-201")
    assert row.identity == NEW and row.last_file == _file(NEW)
