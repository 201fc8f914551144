"""Benchmark: publish on write, and a restart at operator scale (issue 13). Prints numbers.

Not a test (timings are flaky on shared machines). Three measurements, on a temporary store
(SQLite, or a fresh PostgreSQL database with ``--postgres``):

1. **apply**: a 33-device order (an IAD and 32 phones, as ``bench_serve.py`` makes) is
   created, then re-applied with one extension renamed (every phone's file changes: the
   phonebook lists everyone); median of ``--applies`` orders. Each apply renders and
   publishes what it touched in the same transaction. Aim: < 100 ms.
2. **republish --all**: every order of ``--devices`` devices rendered again; once with
   nothing changed (render and compare), once after a template change (every file written:
   an operator override folder adds a comment line to the phones' template). Aim: 10,000
   devices < 10 s.
3. **restart**: ``provisioner serve`` started on the store; seconds from start to the first
   fetch answered 200 (an armed phone's file over HTTP), and to every order loaded. Aim:
   100,000 published devices, first fetch within 5 s.

    .venv/bin/python lab/bench_publish.py --devices 10000            # SQLite
    .venv/bin/python lab/bench_publish.py --devices 100000 --skip-apply --skip-republish
    .venv/bin/python lab/bench_publish.py --devices 100000 --postgres --skip-apply
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

PHONES = 32
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def order_document(o: int) -> dict[str, Any]:
    """Office Maxi, one site, an IAD and 32 phones on 32 extensions: 33 devices."""
    exts = [{"number": f"+3902{5550000 + i}", "short": 1000 + i, "type": "standard",
             "name": f"Ext {i}", "site": "hq"} for i in range(PHONES)]  # fmt: skip
    phones = [
        {"model": "alcatel-temporis-ip150", "extension": 1000 + i,
         "mac": f"00:80:f2:{(o >> 8) & 0xFF:02x}:{o & 0xFF:02x}:{i:02x}"}
        for i in range(PHONES)
    ]  # fmt: skip
    iad = {"model": "iad", "site": "hq", "mac": f"00:1d:74:{(o >> 8) & 0xFF:02x}:{o & 0xFF:02x}:00"}
    return {
        "order": f"WT-PUB-{o:05d}",
        "customer": {"name": "Carico S.r.l.", "vat": "IT05550000003"},
        "plan": "office_maxi",
        "lines": 8,
        "numbers": {"gnr": [{"first": "+39025550000", "last": "+39025550099"}]},
        "sites": [{"id": "hq", "address": "Via Carico 1, Milano", "connectivity": "fttc"}],
        "extensions": exts,
        "devices": [iad, *phones],
    }


def _document(doc: dict[str, Any]) -> Any:
    from provisioner.documents.validate import check_text

    checked = check_text(yaml.safe_dump(doc, sort_keys=False))
    if checked.document is None:
        raise SystemExit("generated order is invalid:\n" + "\n".join(checked.lines()))
    return checked.document


@contextlib.contextmanager
def store(postgres: bool) -> Iterator[dict[str, str]]:
    """Environment of a fresh store: a temporary home, SQLite or a new PostgreSQL database."""
    home = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    env = {"PROVISIONER_HOME": str(home)}
    admin, name = None, ""
    if postgres:
        from sqlalchemy import create_engine, text

        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        env["PROVISIONER_DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:5432/{name}"
    old = {k: os.environ.get(k) for k in ("PROVISIONER_HOME", "PROVISIONER_DATABASE_URL")}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            admin.dispose()
        shutil.rmtree(home, ignore_errors=True)


def service() -> Any:
    from provisioner.orders.service import OrdersService
    from provisioner.settings import load_settings

    return OrdersService(load_settings())


def bench_apply(count: int) -> None:
    inv = service()
    created, changed = [], []
    for o in range(count):
        doc = order_document(50_000 + o)
        document = _document(doc)
        t = time.perf_counter()
        inv.apply(document, actor="bench")
        created.append(time.perf_counter() - t)
        renamed = copy.deepcopy(doc)
        renamed["extensions"][0]["name"] = "Reception"
        document = _document(renamed)
        t = time.perf_counter()
        result = inv.apply(document, actor="bench")
        changed.append(time.perf_counter() - t)
        assert result.status == "updated", result
    inv.db.dispose()
    for label, times in (("created", created), ("re-applied, every file changed", changed)):
        ms = statistics.median(times) * 1000
        verdict = "ok" if ms < 100 else "ABOVE AIM"
        print(f"apply of a 33-device order, {label}: median {ms:.0f} ms of {count}"
              f" (max {max(times) * 1000:.0f} ms; aim < 100 ms) {verdict}")  # fmt: skip


def build(devices: int) -> tuple[int, float]:
    """Apply and arm orders of 33 devices until ``devices`` devices; (orders, seconds)."""
    inv = service()
    orders = -(-devices // (PHONES + 1))
    t0 = time.perf_counter()
    for o in range(orders):
        inv.apply(_document(order_document(o)), actor="bench")
        if (o + 1) % 200 == 0:
            done = o + 1
            rate = done * (PHONES + 1) / (time.perf_counter() - t0)
            print(f"  ... {done} orders ({done * (PHONES + 1)} devices), {rate:.0f} devices/s",
                  flush=True)  # fmt: skip
    inv.arm(f"WT-PUB-{orders - 1:05d}", 600, actor="bench")
    inv.db.dispose()
    return orders, time.perf_counter() - t0


def bench_republish(devices: int) -> None:
    inv = service()
    t = time.perf_counter()
    same = inv.republish()
    unchanged = time.perf_counter() - t
    override = Path(os.environ["PROVISIONER_HOME"]) / "override" / "temporis"
    override.mkdir(parents=True)
    builtin = Path(__file__).resolve().parent.parent / "device_templates" / "temporis"
    template = (builtin / "phone.cfg.j2").read_text()
    # a comment line at the end (inside the last section, so the INI check still passes)
    comment = "\n# operator override: new firmware server\n"
    (override / "phone.cfg.j2").write_text(template + comment)
    inv.db.dispose()
    os.environ["PROVISIONER_TEMPLATE_OVERRIDE_DIR"] = str(override.parent)
    inv = service()
    t = time.perf_counter()
    changed = inv.republish()
    rewritten = time.perf_counter() - t
    os.environ.pop("PROVISIONER_TEMPLATE_OVERRIDE_DIR")
    inv.db.dispose()
    print(f"republish --all, nothing changed: {unchanged:.1f} s for {devices} devices"
          f" ({devices / unchanged:.0f} devices/s; {same.written} files written)")  # fmt: skip
    verdict = "ok" if devices > 10_000 or rewritten < 10 * devices / 10_000 else "ABOVE AIM"
    print(f"republish --all after a template change: {rewritten:.1f} s for {devices} devices"
          f" ({devices / rewritten:.0f} devices/s; {changed.written} files written;"
          f" aim 10,000 devices < 10 s) {verdict}")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_restart(env: dict[str, str], orders: int) -> None:
    port = _free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        tftp = s.getsockname()[1]
    mac = f"00:80:f2:{((orders - 1) >> 8) & 0xFF:02x}:{(orders - 1) & 0xFF:02x}:07"
    url = f"http://127.0.0.1:{port}/{mac.replace(':', '')}.cfg"
    argv = [str(Path(sys.executable).parent / "provisioner"), "serve", "--host", "127.0.0.1",
            "--http-port", str(port), "--tftp-port", str(tftp), "--no-api"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    first, loaded = None, None

    def watch_stdout() -> None:  # "index: N orders in memory in X s"
        nonlocal loaded
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("index:"):
                loaded = time.perf_counter() - t0

    threading.Thread(target=watch_stdout, daemon=True).start()
    try:
        while time.perf_counter() - t0 < 120:
            if proc.poll() is not None:
                raise SystemExit(f"serve exited: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    first = time.perf_counter() - t0
                    break
            time.sleep(0.02)
        while loaded is None and time.perf_counter() - t0 < 300 and proc.poll() is None:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    backend = "PostgreSQL" if "PROVISIONER_DATABASE_URL" in env else "SQLite"
    devices = orders * (PHONES + 1)
    if first is None:
        print(f"restart ({backend}, {devices} devices): NO FETCH within 120 s")
        return
    verdict = "ok" if first < 5 else "ABOVE AIM"
    every = f"every order in memory after {loaded:.1f} s" if loaded else "index not loaded"
    print(f"restart ({backend}, {devices} published devices): first fetch {first:.2f} s after"
          f" start (aim < 5 s) {verdict}; {every}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10_000, help="devices in the store (10,000)")
    ap.add_argument("--applies", type=int, default=10, help="orders for the apply timing (10)")
    ap.add_argument("--postgres", action="store_true", help="PostgreSQL at 127.0.0.1:5432")
    ap.add_argument("--skip-apply", action="store_true")
    ap.add_argument("--skip-republish", action="store_true")
    ap.add_argument("--skip-restart", action="store_true")
    args = ap.parse_args(argv)
    with store(args.postgres) as env:
        if not args.skip_apply:
            bench_apply(args.applies)
        orders, seconds = build(args.devices)
        devices = orders * (PHONES + 1)
        print(f"store: {orders} orders, {devices} devices applied and published in"
              f" {seconds:.0f} s ({devices / seconds:.0f} devices/s)", flush=True)  # fmt: skip
        if not args.skip_republish:
            bench_republish(devices)
        if not args.skip_restart:
            bench_restart(env, orders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
