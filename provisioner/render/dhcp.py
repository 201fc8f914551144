"""DHCP snippets for a customer's own DHCP server: option 66 for the order's phones only.

Per site, for the phones and DECT bases bound to a MAC (drivers with ``wants_option66``):
a dnsmasq snippet (``dhcp-host=<mac>,set:prov`` + ``dhcp-option=tag:prov,66,...``) and an
ISC Kea ``Dhcp4`` snippet (a client class matching exactly those MACs, with the option data
in the class). Other clients get nothing from either. The IAD's own DHCP server needs
neither: its config carries option 66 already.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.errors import RenderError
from provisioner.render.context import OrderView
from provisioner.render.drivers.base import public_settings
from provisioner.render.engine import RenderEngine, Renderer, check_format

FORMATS = {"dnsmasq": ("dnsmasq.conf.j2", "text"), "kea": ("kea-dhcp4.json.j2", "json")}


@dataclass(frozen=True)
class DhcpClient:
    device_id: str
    model: str
    mac: str


def site_clients(engine: RenderEngine, order: OrderView, site_id: str) -> list[DhcpClient]:
    """Bound phones and DECT bases of ``site_id`` (planned ones have no MAC to match yet)."""
    registry = engine.registry
    order.site(site_id)  # unknown site: one-line error
    out = []
    for d in order.devices:
        if not d.mac or d.site is None or d.site.id != site_id:
            continue
        if registry.has_model(d.model) and registry.for_model(d.model).wants_option66:
            out.append(DhcpClient(d.device_id, d.model, d.mac))
    return out


def dhcp_snippet(renderer: Renderer, order_id: str, site_id: str, fmt: str) -> str:
    """The snippet (``dnsmasq`` or ``kea``) giving option 66 to a site's phones, from the store."""
    order, _ = renderer.order_views(order_id)
    return render_dhcp(renderer.engine, order, site_id, fmt)


def render_dhcp(engine: RenderEngine, order: OrderView, site_id: str, fmt: str) -> str:
    """The snippet in ``fmt`` (dnsmasq | kea), checked like every rendered file."""
    if fmt not in FORMATS:
        raise RenderError(f"DHCP format {fmt}: use one of {', '.join(FORMATS)}")
    template, check = FORMATS[fmt]
    clients = site_clients(engine, order, site_id)
    settings = engine.settings
    tpl = engine.template("dhcp", fmt, template)
    text: str = tpl.render(
        order=order,
        site=order.site(site_id),
        clients=clients,
        settings=public_settings(settings),
        tag="prov",
        class_name=f"officesmart-{order.order_id}-{site_id}",
    )
    try:
        check_format(check, text)
    except ValueError as exc:
        raise RenderError(
            f"order {order.order_id}: site {site_id}: {fmt} snippet invalid: {exc}"
        ) from None
    return text
