"""Every rendered file is checked before it is used; pure engine, hand-made views."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from provisioner.errors import RenderError
from provisioner.render.context import (
    DeviceView,
    ExtensionView,
    OrderView,
    SecretBook,
    SiteView,
    TerminalView,
)
from provisioner.render.engine import MASK, RenderEngine, mask

SITE = SiteView("milano", "Via Roma 1", "fttc", "u@x")
E201 = ExtensionView(201, "+390212345601", "standard", "Giulia <Rossi> & Co", "milano")
E202 = ExtensionView(202, "+390212345602", "standard", "Marco", "milano")


def _order() -> OrderView:
    phones = (
        DeviceView(
            "phone-201",
            "alcatel-temporis-ip150",
            SITE,
            "00:80:f0:00:00:01",
            terminals=(TerminalView(0, "alcatel-temporis-ip150", E201),),
        ),
        DeviceView(
            "phone-202",
            "alcatel-temporis-ip150",
            SITE,
            "00:80:f0:00:00:02",
            terminals=(TerminalView(0, "alcatel-temporis-ip150", E202),),
        ),
    )
    return OrderView(
        "T-1", "Cliente", "IT01234567897", "office_plus", 2, {}, (SITE,), (E201, E202), phones
    )


def _secrets(override: dict[tuple[str, str], str] | None = None) -> SecretBook:
    values = {
        ("extension:201", "sip_password"): 'sip201-Aa&<b>"x',
        ("extension:202", "sip_password"): "sip202secretvalue",
        ("device:phone-201", "admin_password"): "admin201secretvalue",
        ("device:phone-201", "provisioning_password"): "prov201secretvalue",
        ("device:phone-202", "admin_password"): "admin202secretvalue",
        ("device:phone-202", "provisioning_password"): "prov202secretvalue",
    }
    values.update(override or {})
    return SecretBook("T-1", values)


def _engine(settings, override: Path | None = None) -> RenderEngine:  # type: ignore[no-untyped-def]
    if override is not None:
        settings = settings.model_copy(update={"template_override_dir": str(override)})
    return RenderEngine(settings)


def test_clean_render_masks_own_secrets_in_every_spelling(settings) -> None:  # type: ignore[no-untyped-def]
    order = _order()
    files = _engine(settings).render_device(order, _secrets(), order.devices[0])
    cfg = files["0080f0000001.cfg"]
    assert b'password = sip201-Aa&<b>"x\n' in cfg.data
    masked = cfg.masked().decode()
    for s in ("sip201", "admin201", "prov201"):
        assert s not in masked
    assert f"password = {MASK}" in masked
    book = files["phonebook-0080f0000001.xml"]
    assert b"Giulia &lt;Rossi&gt; &amp; Co" in book.data  # XML autoescaped
    assert mask(b"k=a&amp;b", ["a&b"]) == f"k={MASK}".encode()


def test_another_devices_secret_in_a_file_is_refused(settings) -> None:  # type: ignore[no-untyped-def]
    order = _order()
    # Phone 202's SIP password happens to be a string phone 201's file holds: must not pass.
    book = _secrets({("extension:202", "sip_password"): "sip.officesmart.example"})
    with pytest.raises(RenderError) as exc:
        _engine(settings).render_device(order, book, order.devices[0])
    msg = str(exc.value)
    assert msg == (
        "order T-1: device phone-201: file 0080f0000001.cfg: holds a secret of "
        "extension:202 (another device)"
    )
    assert "\n" not in msg


def test_empty_secret_is_refused(settings) -> None:  # type: ignore[no-untyped-def]
    order = _order()
    with pytest.raises(RenderError, match="secret admin_password of device:phone-201 is empty"):
        _engine(settings).render_device(
            order, _secrets({("device:phone-201", "admin_password"): ""}), order.devices[0]
        )


def test_missing_secret_is_refused(settings) -> None:  # type: ignore[no-untyped-def]
    order = _order()
    values = dict(_secrets().values)
    del values[("device:phone-201", "provisioning_password")]
    with pytest.raises(RenderError, match="no secret provisioning_password for device:phone-201"):
        _engine(settings).render_device(order, SecretBook("T-1", values), order.devices[0])


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("no section here\n", "not valid ini"),
        ("[ a ]\nk = 1\n", "section \\[ a \\] has no path="),
        ("[ a ]\npath = /x\nk = 1\nk = 2\n", "not valid ini"),
        ("{{ nope }}\n", "'nope' is undefined"),
        ("{{ ''.__class__.__mro__ }}\n", "template"),
        ("{% for %}\n", "template"),
    ],
)
def test_bad_template_output_is_a_one_line_error_naming_device_and_file(
    settings, tmp_path: Path, template: str, reason: str
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "temporis").mkdir()
    (tmp_path / "temporis" / "phone.cfg.j2").write_text(template)
    order = _order()
    with pytest.raises(RenderError, match=reason) as exc:
        _engine(settings, tmp_path).render_device(order, _secrets(), order.devices[0])
    assert str(exc.value).startswith("order T-1: device phone-201: file 0080f0000001.cfg")
    assert "\n" not in str(exc.value)


def test_planned_phone_has_no_file_yet(settings) -> None:  # type: ignore[no-untyped-def]
    order = _order()
    planned = dataclasses.replace(order.devices[0], mac="")
    assert _engine(settings).render_device(order, _secrets(), planned) == {}


def test_more_extensions_than_accounts_is_refused(settings) -> None:  # type: ignore[no-untyped-def]
    order = _order()
    greedy = dataclasses.replace(
        order.devices[0],
        terminals=tuple(TerminalView(0, "alcatel-temporis-ip150", e) for e in (E201, E202, E201)),
    )
    with pytest.raises(RenderError, match="holds 2 SIP accounts"):
        _engine(settings).render_device(order, _secrets(), greedy)
