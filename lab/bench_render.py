"""Benchmark: render the files of 10,000 generated devices and print configs per second.

Not a test (timings are flaky on shared machines). Pure engine: orders are built as plain
views in memory, so this measures templates + checks, not the store. Every file is
rendered and checked exactly as served (format parse, secret checks).

    .venv/bin/python lab/bench_render.py            # 10,000 devices
    .venv/bin/python lab/bench_render.py --devices 500   # CI smoke
"""

from __future__ import annotations

import argparse
import secrets
import time

from provisioner.render.context import (
    DeviceView,
    ExtensionView,
    OrderView,
    SecretBook,
    SiteView,
    TerminalView,
)
from provisioner.render.engine import RenderEngine
from provisioner.settings import load_settings

DEVICES_PER_ORDER = 20  # IAD, ONT, switch, 16 desk phones, 1 DECT base with 4 handsets


def make_order(n: int) -> tuple[OrderView, SecretBook]:
    """One Office Maxi order on FTTH: 21 extensions (an operator first), 20 devices."""
    oid = f"BENCH-{n:06d}"
    site = SiteView("hq", f"Via Bench {n}, 20100 Milano MI", "ftth", f"{oid.lower()}@example")
    exts = tuple(
        ExtensionView(
            200 + i,
            f"+3902{n:06d}{i:02d}",
            "operator" if i == 0 else "standard",
            f"Utente {i}",
            "hq",
        )
        for i in range(21)
    )
    values: dict[tuple[str, str], str] = {
        (f"extension:{e.short}", "sip_password"): secrets.token_urlsafe(16) for e in exts
    }
    values[("site:hq", "pppoe_password")] = secrets.token_urlsafe(16)

    def mac(kind: int, i: int) -> str:
        return f"02:{kind:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}:00:{i:02x}"

    devices = [
        DeviceView("iad-hq", "iad", site, mac(1, 0), fax_pos=("fax",)),
        DeviceView("ont-hq", "mini-ont", site, serial=f"ALCL{n:08X}"),
        DeviceView("sw-hq", "dlink-dgs-1100-24p", site, mac(2, 0)),
    ]
    for i in range(16):
        model = "alcatel-temporis-ip701g" if i % 2 == 0 else "alcatel-temporis-ip150"
        on_switch = i < 11
        devices.append(
            DeviceView(
                f"phone-{exts[i].short}",
                model,
                site,
                mac(3, i),
                switch="sw-hq" if on_switch else None,
                port=i + 1 if on_switch else None,
                terminals=(TerminalView(0, model, exts[i]),),
            )
        )
    devices.append(
        DeviceView(
            "dect-216",
            "alcatel-ip2215",
            site,
            mac(4, 0),
            switch="sw-hq",
            port=12,
            terminals=tuple(TerminalView(s + 1, "alcatel-ip15", exts[16 + s]) for s in range(4)),
        )
    )
    kinds = {"iad": ("admin_password", "provisioning_password"), "mini-ont": ("ploam_password",)}
    kinds["dlink-dgs-1100-24p"] = (
        "admin_password",
        "snmp_community",
        "snmp_auth_key",
        "snmp_priv_key",
    )
    for d in devices:
        for name in kinds.get(d.model, ("admin_password", "provisioning_password")):
            values[(f"device:{d.device_id}", name)] = secrets.token_urlsafe(16)
    order = OrderView(
        oid, "Bench S.r.l.", "IT01234567897", "office_maxi", 8, {}, (site,), exts, tuple(devices)
    )
    return order, SecretBook(oid, values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    args = ap.parse_args()
    engine = RenderEngine(load_settings())
    orders = [make_order(n) for n in range(max(1, args.devices // DEVICES_PER_ORDER))]
    engine.render_all(*orders[0])  # compile templates once, as a running server has
    devices = files = 0
    nbytes = 0
    start = time.perf_counter()
    for order, book in orders:
        out = engine.render_all(order, book)
        devices += len(order.devices)
        files += len(out)
        nbytes += sum(len(f.data) for f in out.values())
    elapsed = time.perf_counter() - start
    print(
        f"rendered {devices} devices ({files} files, {nbytes / 1e6:.1f} MB) in {elapsed:.2f} s: "
        f"{devices / elapsed:,.0f} device configs/s, {files / elapsed:,.0f} files/s"
    )


if __name__ == "__main__":
    main()
