"""Simulated phones boot, fetch their files from our server and register on a real Kamailio.

What a customer notices: every desk phone and DECT handset of an order registers with the
credentials its file gave it; a rotated password locks the old file out until the phone
fetches again; a phone outside its enrollment window gets nothing; DECT handsets register
as the extensions the order puts in their slots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from provisioner.documents.validate import check_text
from provisioner.render.engine import Renderer
from provisioner.store.models import AuditEvent, Enrollment, SecretRow, utcnow
from provisioner_lab.phones import Phone, order_phones
from provisioner_lab.sip import Kamailio, SipAccount, register_accounts

ORDER = "WT-2026-000104"  # two desk phones (200, 201) and a DECT kit (slots 1, 2: 202, 203)
SAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "orders" / f"{ORDER}.yaml"
NUMBER = {200: "+390957001100", 201: "+390957001101", 202: "+390957001102",
          203: "+390957001103"}  # fmt: skip
DECT_MAC = "00:80:f0:20:10:01"
DESK_MAC = "00:80:f0:20:00:01"


def _phones(served: Any) -> dict[str, Phone]:
    phones = order_phones(served.inventory, ORDER, server="127.0.0.1",
                          tftp_port=served.tftp_port, http_port=served.http_port)  # fmt: skip
    return {p.mac: p for p in phones}


def _reapply(served: Any, doc: dict[str, Any]) -> None:
    checked = check_text(yaml.safe_dump(doc, sort_keys=False), f"{ORDER}.yaml")
    assert checked.ok and checked.document is not None, checked.lines()
    served.inventory.apply(checked.document, source="test", actor="test")


def test_every_phone_and_handset_registers_and_rotation_locks_out_the_stale_file(
    served: Any, registrar: Kamailio, cli: Callable[..., Any]
) -> None:
    inv = served.inventory
    inv.arm(ORDER, 30, actor="test")
    phones = _phones(served)
    assert set(phones) == {DESK_MAC, "00:80:f0:20:00:02", DECT_MAC}
    renderer = Renderer(inv.settings, inv)
    seen: dict[int, tuple[str, int | None]] = {}
    for mac, phone in phones.items():
        report = phone.boot("tftp")
        assert report.fetched_via == "tftp", report.error
        served_file = renderer.files_for_mac(mac)[phone.filename]
        assert report.sha256 == hashlib.sha256(served_file).hexdigest()
        for acc in report.accounts:
            short = next(s for s, n in NUMBER.items() if n == acc.user)
            seen[short] = (phone.device_id, acc.status)
    # Every terminal's extension registered, each from the device the order puts it on.
    assert {s: st for s, (_, st) in seen.items()} == {200: 200, 201: 200, 202: 200, 203: 200}
    assert seen[202][0] == seen[203][0] == "dect-catania"

    dect = phones[DECT_MAC]
    old_password = next(a.password for a in dect.file.accounts if a.slot == 1)  # type: ignore[union-attr]
    rotated = cli("rotate", ORDER, "--extension", "202")
    assert old_password not in rotated.output
    cli("pbx", "export", "--all", "--format", "kamailio", "--out", str(registrar.db_dir))
    registrar.restart()

    stale = {a.slot: a.status for a in dect.register()}
    assert stale == {1: 403, 2: 200}  # only the rotated handset is locked out
    assert all(a.status == 200 for a in phones[DESK_MAC].register())

    served.settle()
    again = dect.boot()  # the base comes back with the credentials its first file installed
    assert again.fetched_via == "http+auth", again.error
    assert {a.slot: a.status for a in again.accounts} == {1: 200, 2: 200}
    assert next(a.password for a in dect.file.accounts if a.slot == 1) != old_password  # type: ignore[union-attr]

    with inv.db.read() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "secret.rotated")).all()
    assert len(events) == 1 and '"extension": 202' in events[0].detail
    assert old_password not in events[0].detail


def test_a_device_outside_its_enrollment_window_gets_no_file_and_cannot_register(
    served: Any, registrar: Kamailio
) -> None:
    inv = served.inventory
    inv.arm(ORDER, 5, actor="test")
    with inv.db.write() as s:  # the window closed: the technician armed it too long ago
        for window in s.scalars(select(Enrollment)):
            window.expires_at = utcnow()
    phone = _phones(served)[DESK_MAC]
    for protocol in ("tftp", "http"):
        report = phone.boot(protocol)
        assert report.fetched_via == "" and report.accounts == []
        assert not report.registered
    assert "tftp" in phone.boot("tftp").error

    # The registrar knows the extension: only the missing file stood in the way.
    inv.arm(DESK_MAC, 5, actor="test")
    served.settle()
    assert phone.boot("tftp").registered


def test_dect_handsets_register_as_the_extensions_in_their_slots(
    served: Any, registrar: Kamailio
) -> None:
    inv = served.inventory
    inv.arm(ORDER, 30, actor="test")
    base = _phones(served)[DECT_MAC]
    first = base.boot("tftp")
    assert {a.slot: (a.user, a.status) for a in first.accounts} == {
        1: (NUMBER[202], 200),
        2: (NUMBER[203], 200),
    }

    # The NOC edits the order as `provisioner export` prints it (device ids kept: the base
    # stays the same device, with the same credentials) and swaps the two handsets.
    doc = inv.export(ORDER)
    kit = next(d for d in doc["devices"] if d["model"] == "alcatel-ip2215")
    kit["handsets"][0]["extension"], kit["handsets"][1]["extension"] = 203, 202
    _reapply(served, doc)
    served.settle()

    swapped = base.boot()
    assert swapped.fetched_via == "http+auth", swapped.error
    assert {a.slot: (a.user, a.status) for a in swapped.accounts} == {
        1: (NUMBER[203], 200),
        2: (NUMBER[202], 200),
    }


def test_export_matches_what_phones_parse_and_escapes_db_text(
    served: Any, sip_port: int, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    inv = served.inventory
    doc = yaml.safe_load(SAMPLE.read_text())
    tricky = "CANARY-a:b\\c d;e=f#g%"  # db_text escapes ':' and '\'; planted to catch leaks
    doc["extensions"][0]["sip_password"] = tricky
    _reapply(served, doc)
    db = tmp_path / "db"
    result = cli("pbx", "export", "--order", ORDER, "--format", "kamailio", "--out", str(db))
    assert tricky not in result.output
    rows = (db / "subscriber").read_text().splitlines()
    assert rows[0] == "username(string) domain(string) password(string)"
    # The phones' realm is the registrar host their file names; the IAD's is the SIP domain.
    assert "+390957001100:127.0.0.1:CANARY-a\\:b\\\\c d;e=f#g%" in rows
    assert "+390957001100:voip.officesmart.example:CANARY-a\\:b\\\\c d;e=f#g%" in rows
    assert len(rows) == 1 + 6 * 2  # every extension, with a terminal or not, in both realms
    assert "6 extensions of 1 orders (12 rows" in result.output
    assert (db / "version").read_text().splitlines()[1] == "subscriber:7"

    inv.arm(ORDER, 30, actor="test")
    with Kamailio(db, port=sip_port, workdir=tmp_path) as kam:
        report = _phones(served)[DESK_MAC].boot("http")
        assert kam.start_seconds < 5
    assert [(a.user, a.status) for a in report.accounts] == [(NUMBER[200], 200)]


def test_export_and_rotate_refuse_what_they_cannot_do(
    served: Any, cli: Callable[..., Any], tmp_path: Path
) -> None:
    no_target = cli("pbx", "export", "--out", str(tmp_path / "x"), ok=False)
    assert no_target.exit_code == 1 and "--order" in no_target.output
    unknown = cli("rotate", ORDER, "--extension", "299", ok=False)
    assert unknown.exit_code == 1 and "no extension 299" in unknown.output
    assert not (tmp_path / "x").exists()


def test_lab_phones_command_boots_the_order_against_its_own_registrar(
    served: Any, cli: Callable[..., Any]
) -> None:
    served.inventory.arm(ORDER, 30, actor="test")
    args = ["lab", "phones", "--order", ORDER, "--tftp-port", str(served.tftp_port),
            "--http-port", str(served.http_port)]  # fmt: skip
    result = cli(*args, "--with-registrar")
    rows = [ln for ln in result.output.splitlines() if "+39095700110" in ln]
    assert len(rows) == 4 and all("200 OK" in ln and "tftp" in ln for ln in rows), result.output

    cli("rotate", ORDER, "--all")  # the phones fetch new files; this registrar is started anew
    served.settle()
    assert cli(*args, "--with-registrar").exit_code == 0
    unarmed = cli("lab", "phones", "--order", "WT-2026-000123", "--tftp-port",
                  str(served.tftp_port), "--with-registrar", ok=False)  # fmt: skip
    assert unarmed.exit_code == 1 and "no (tftp" in unarmed.output


def test_rotation_marks_the_secret_and_warns_when_the_document_owns_it(
    served: Any, cli: Callable[..., Any]
) -> None:
    inv = served.inventory
    doc = yaml.safe_load(SAMPLE.read_text())
    given = "CANARY-from-the-document"
    doc["extensions"][0]["sip_password"] = given
    _reapply(served, doc)
    with inv.db.read() as s:
        before = inv.get(s, ORDER).updated_at
    result = cli("rotate", ORDER, "--extension", "200", "--extension", "201")
    assert "new SIP password for extension 200, 201" in result.output
    assert "document gives the password of 200" in result.output
    with inv.db.read() as s:
        order = inv.get(s, ORDER)
        assert order.updated_at > before
        rows = {
            r.owner: r for r in s.scalars(select(SecretRow).where(SecretRow.order_pk == order.id))
        }
        assert rows["extension:200"].source == rows["extension:201"].source == "rotated"
        assert rows["extension:202"].source == "generated"
        assert inv.secret(s, order, "extension:200", "sip_password") != given
    _reapply(served, doc)  # kubectl-apply semantics: the document's value comes back
    with inv.db.read() as s:
        assert inv.secret(s, inv.get(s, ORDER), "extension:200", "sip_password") == given


def test_an_iad_analog_line_registers_in_the_sip_domain_its_config_sets(
    served: Any, registrar: Kamailio
) -> None:
    from provisioner_lab.iad_sim import parse_config

    analog = "WT-2026-000101"  # Super Office One: the extension is the analog phone on FXS 1
    files = Renderer(served.inventory.settings, served.inventory).render_order(analog)
    iad = next(f for f in files.values() if f.model == "iad")
    config = parse_config(iad.data.decode())
    domain = config[("voice", "sip", "domain")]
    where = f"{config[('voice', 'sip', 'registrar')]}:{config[('voice', 'sip', 'registrar-port')]}"
    assert domain == "voip.officesmart.example" and where == registrar.address
    lines = sorted({p[2] for p in config if p[:2] == ("voice", "line")})
    assert lines
    accounts = [
        SipAccount(
            config[("voice", "line", n, "username")],
            domain,
            config[("voice", "line", n, "password")],
            where,
            config[("voice", "line", n, "auth-username")],
        )
        for n in lines
    ]
    assert [r.status for r in register_accounts(accounts)] == [200] * len(accounts)
