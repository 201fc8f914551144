"""Random valid orders render for every device, and no file holds another device's secret."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from provisioner.catalog import MODELS
from provisioner.documents.validate import check_text
from provisioner.render.dhcp import dhcp_snippet
from provisioner.render.engine import Renderer
from provisioner.store.models import SecretRow

_ids = itertools.count(1)
SWITCHES = {"dlink-dgs-1100-08p": list(range(1, 9)), "dlink-dgs-1100-24p": list(range(1, 13))}


def _mac(n: int, kind: int, i: int) -> str:
    # 02: locally administered unicast; order number and index keep MACs unique per run.
    return (
        f"02:{kind:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
    )


@st.composite
def order_documents(draw: st.DrawFn) -> dict[str, Any]:
    n = next(_ids)
    plan = draw(st.sampled_from(["office_plus", "office_maxi"]))
    two_sites = draw(st.booleans())
    site_ids = ["alfa", "beta"] if two_sites else ["alfa"]
    conns = [draw(st.sampled_from(["adsl", "fttc", "ftth", "fwa"])) for _ in site_ids]
    if plan == "office_plus":
        lines, n_ext = 2, draw(st.integers(2, 8))
    else:
        lines = 3 if "fwa" in conns else draw(st.integers(3, 8))
        n_ext = draw(st.integers(3, 32))
    types = draw(
        st.lists(
            st.sampled_from(["standard", "premium", "operator"]), min_size=n_ext, max_size=n_ext
        )
    )
    numbers = [f"+3902{n:06d}{i:02d}" for i in range(n_ext)]
    exts = [
        {
            "number": numbers[i],
            "short": 100 + i,
            "type": t,
            "name": draw(st.sampled_from(["Anna", "Rossi & Figli", 'Ufficio "Tecnico"', "Sala 1"])),
            "site": site_ids[i % len(site_ids)],
        }
        for i, t in enumerate(types)
    ]
    fax = draw(st.integers(0, 2))
    devices: list[dict[str, Any]] = []
    free_ports: dict[str, list[int]] = {}
    for k, (sid, conn) in enumerate(zip(site_ids, conns, strict=True)):
        devices.append({"model": "iad", "site": sid, "mac": _mac(n, 1, k)})
        if conn == "ftth":
            devices.append({"model": "mini-ont", "site": sid, "serial": f"ALCL{n:04X}{k:04X}"})
        if draw(st.booleans()):
            model = draw(st.sampled_from(sorted(SWITCHES)))
            sw = f"sw-{sid}"
            devices.append({"model": model, "id": sw, "site": sid, "mac": _mac(n, 2, k)})
            free_ports[sid] = list(SWITCHES[model])
    quota = sum(1 for t in types if t != "operator")
    used = 0
    dect: dict[str, dict[str, Any]] = {}
    for i, e in enumerate(exts):
        if used >= quota:
            break
        choice = draw(st.sampled_from(["none", "ip150", "ip701g", "dect"]))
        if choice == "none":
            continue
        used += 1
        sid = e["site"]
        if choice == "dect":
            base = dect.get(sid)
            if base is None or len(base["handsets"]) >= MODELS["alcatel-ip2215"].handset_capacity:
                base = {
                    "model": "alcatel-ip2215",
                    "site": sid,
                    "mac": _mac(n, 3, i),
                    "handsets": [],
                }
                dect[sid] = base
                devices.append(base)
                if free_ports.get(sid) and draw(st.booleans()):
                    base.update(switch=f"sw-{sid}", port=free_ports[sid].pop(0))
            base["handsets"].append({"extension": e["short"]})
            continue
        phone: dict[str, Any] = {
            "model": f"alcatel-temporis-{choice}",
            "extension": e["short"],
        }
        if draw(st.booleans()):  # bound now, or planned for the appointment
            phone["mac"] = _mac(n, 4, i)
        if free_ports.get(sid) and draw(st.booleans()):
            phone.update(switch=f"sw-{sid}", port=free_ports[sid].pop(0))
        devices.append(phone)
    return {
        "order": f"PROP-{n:05d}",
        "customer": {"name": "Cliente Prova", "vat": "IT01234567897"},
        "plan": plan,
        "lines": lines,
        "options": {"multisite": two_sites, "fax_pos": fax},
        "numbers": {"single": numbers},
        "sites": [
            {"id": sid, "address": f"Via {sid} 1", "connectivity": conn}
            for sid, conn in zip(site_ids, conns, strict=True)
        ],
        "extensions": exts,
        "devices": devices,
    }


def _own_secrets(order: Any, device_id: str) -> set[tuple[str, str]]:
    """What a device may hold, worked out here independently of the drivers."""
    dev = order.device(device_id)
    owned = {(f"device:{device_id}", "*")}
    owned |= {(f"extension:{t.extension.short}", "sip_password") for t in dev.terminals}
    if dev.model == "iad" and dev.site and dev.site.connectivity != "fwa":
        owned.add((f"site:{dev.site.id}", "pppoe_password"))
    return owned


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import os

    from provisioner.orders.service import OrdersService
    from provisioner.settings import load_settings

    home = Path(tmp_path_factory.mktemp("prophome"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env["PROVISIONER_HOME"] = str(home)
    s = load_settings(env)
    inv = OrdersService(s)
    yield s, inv
    inv.db.dispose()


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(doc=order_documents())
def test_random_orders_render_without_leaks(store: Any, doc: dict[str, Any]) -> None:
    s, inv = store
    checked = check_text(yaml.safe_dump(doc, sort_keys=False), "prop.yaml")
    assert checked.ok, checked.lines()
    assert checked.document is not None
    inv.apply(checked.document)
    r = Renderer(s, inv)
    files = r.render_order(doc["order"])
    order, _ = r.order_views(doc["order"])
    with inv.db.read() as session:
        o = inv.get(session, doc["order"])
        rows = session.scalars(select(SecretRow).where(SecretRow.order_pk == o.id)).all()
        secrets = {(row.owner, row.name): inv.vault.decrypt(row.ciphertext) for row in rows}
    by_device: dict[str, list[bytes]] = {}
    for f in files.values():
        by_device.setdefault(f.device_id, []).append(f.data)
    # Every bound device with files got them; planned ones are listed as planned.
    for d in order.devices:
        if d.model in ("iad", "dlink-dgs-1100-08p", "dlink-dgs-1100-24p") or d.mac or d.serial:
            assert d.device_id in by_device, d.device_id
    for device_id, datas in by_device.items():
        own = _own_secrets(order, device_id)
        own_values = {
            v for (owner, name), v in secrets.items() if (owner, name) in own or (owner, "*") in own
        }
        for (owner, name), value in secrets.items():
            if (owner, name) in own or (owner, "*") in own or value in own_values:
                continue
            for data in datas:
                assert value.encode() not in data, f"{device_id} holds {owner} {name}"
    # The phones the IAD does not serve locally get option 66 from the site snippets.
    for site in doc["sites"]:
        for fmt in ("dnsmasq", "kea"):
            dhcp_snippet(r, doc["order"], site["id"], fmt)
