"""The REST API tests' store: the samples, a canary order, one token per role.

The technician's order (``OWN``) is the sample WT-2026-000104 with every secret replaced by
a canary string; responses to viewer, technician and noc must never contain one.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from provisioner.api.limits import ApiLimits
from provisioner.documents.validate import check_paths, check_text
from provisioner.orders.service import OrdersService
from provisioner.settings import Settings
from provisioner.store import tokens
from provisioner.store.push_models import PushResultRow

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "inventory" / "orders"
OWN = "WT-2026-000104"  # on the technician's token; carries the canaries
OTHER = "WT-2026-000123"  # not on the technician's token
ROLES = ("viewer", "technician", "noc", "admin")
CANARY = f"CANARY-{uuid.uuid4().hex[:16]}"
# Limits high enough that only the rate-limit tests ever see a 429.
OPEN_LIMITS = ApiLimits(rate=1e6, burst=1_000_000)
# Pushes started over the API go to loopback only: the default also allows the private
# ranges, and the schema's own example target (192.168.1.254) is one of them.
TEST_PUSH_NETWORKS = "127.0.0.0/8,::1/128"
# A resync (NOTIFY check-sync) goes to a loopback port where no registrar listens: it ends
# as a timeout after resync_timeout, and nothing leaves the host.
TEST_SIP = {"sip_registrar": "127.0.0.1", "sip_registrar_port": 9, "resync_timeout": 0.3}


def canary_document() -> str:
    """The OWN sample with a canary in every secret it can carry."""
    doc = yaml.safe_load((SAMPLES / f"{OWN}.yaml").read_text())
    for i, ext in enumerate(doc["extensions"]):
        ext["sip_password"] = f"{CANARY}-sip{i}"
    for site in doc["sites"]:
        site["pppoe_password"] = f"{CANARY}-ppp"
    for i, dev in enumerate(doc["devices"]):
        if dev["model"] != "mini-ont":
            dev["admin_password"] = f"{CANARY}-adm{i}"
        if dev["model"].startswith("dlink-"):
            dev["snmp_community"] = f"{CANARY}-snmp"
    text = yaml.safe_dump(doc, sort_keys=False)
    checked = check_text(text, "canary")
    assert checked.ok, checked.lines()
    return text


RACE = "WT-2026-800001"  # 5 standard + 15 operator extensions, no terminals yet
RACE_QUOTA = 5


def race_document() -> str:
    """An order whose terminal quota (5) is far below its extension count (20)."""
    exts = [
        {
            "number": f"+39021111{i:04d}",
            "short": 300 + i,
            "type": "standard" if i < RACE_QUOTA else "operator",
            "name": f"Posto {i}",
            "site": "milano",
        }
        for i in range(20)
    ]
    doc = {
        "order": RACE,
        "customer": {"name": "Ferramenta Colombo S.n.c.", "vat": "IT02468013574"},
        "plan": "office_maxi",
        "lines": 3,
        "numbers": {"gnr": [{"first": "+390211110000", "last": "+390211110099"}]},
        "sites": [
            {"id": "milano", "address": "Via Roma 1, 20121 Milano MI", "connectivity": "fttc"}
        ],
        "extensions": exts,
        "devices": [{"model": "iad", "site": "milano"}],
    }
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class Store:
    """A populated store and the tokens (text) of each role."""

    settings: Settings
    inventory: OrdersService
    tokens: dict[str, str]
    macs: dict[str, list[str]] = field(default_factory=dict)  # order -> bound MACs
    jobs: list[str] = field(default_factory=list)  # stored push jobs (stored_push_job)

    def headers(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}


def populate(home: Path) -> Store:
    """Samples (the OWN one with canaries) applied, and one token per role."""
    settings = Settings(home=home, push_networks=TEST_PUSH_NETWORKS, **TEST_SIP)
    inv = OrdersService(settings)
    for checked in check_paths([SAMPLES]):
        if checked.order_id == OWN:
            continue
        if checked.order_id == OTHER:
            assert checked.ok, checked.lines()
        if checked.ok and checked.document is not None:
            inv.apply(checked.document, source=checked.file, actor="test")
    for text in (canary_document(), race_document()):
        checked = check_text(text, "test")
        assert checked.ok and checked.document is not None, checked.lines()
        inv.apply(checked.document, source="test", actor="test")
    made = {}
    with inv.db.write() as session:
        for role in ROLES:
            orders = [OWN] if role == "technician" else []
            made[role] = tokens.create(session, role, name=f"t-{role}", orders=orders)[1]
    store = Store(settings, inv, made)
    with inv.db.read() as session:
        for oid in (OWN, OTHER):
            order = inv.get(session, oid)
            store.macs[oid] = [d.mac for d in order.devices if d.mac]
    return store


def copy_store(template: Path, dest: Path, push_networks: str = TEST_PUSH_NETWORKS) -> Store:
    shutil.copytree(template, dest)
    saved: dict[str, Any] = yaml.safe_load((dest / "tokens.yaml").read_text())
    settings = Settings(home=dest, push_networks=push_networks, **TEST_SIP)
    return Store(settings, OrdersService(settings), saved["tokens"], saved["macs"])


def stored_push_job(inv: OrdersService, order_id: str, job_id: str | None = None) -> str:
    """A finished dry-run job on the order's switches and IADs, as a push job stores it (and
    as the API reads it back after a restart). Made once per ``job_id``."""
    job_id = job_id or uuid.uuid4().hex
    now = datetime.now(UTC)
    with inv.db.write() as session:
        if session.scalar(select(PushResultRow.id).where(PushResultRow.job_id == job_id)):
            return job_id
        order = inv.get(session, order_id)
        for dev in order.devices:
            if dev.model == "iad" or dev.model.startswith("dlink-"):
                session.add(
                    PushResultRow(
                        job_id=job_id,
                        device_pk=dev.id,
                        started_at=now - timedelta(seconds=2),
                        ended_at=now,
                        changed=True,
                        diff_lines=1,
                        result="dry-run",
                        diff="+set sysName " + dev.device_id,
                    )
                )
    return job_id
