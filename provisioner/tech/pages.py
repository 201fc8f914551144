"""The technician page: ``/tech/`` on the serving HTTP port (and under ``provisioner api``).

Phone-sized, server-rendered (Jinja2 templates and static files are package data beside this
module; a little plain JavaScript, nothing fetched at run time). The install appointment:

- **Login** by a one-time link (``provisioner token create --role technician --order ORDER
  --link``): ``GET /tech/login/<code>`` shows a Start button (so that link previews in chat
  apps do not use the link up), its POST turns the link into an HttpOnly, SameSite=Strict
  session cookie that lasts as long as the token and sees the token's orders only. No token
  appears in any later URL.
- **The checklist** of an order per site: every device with its state (the shared
  vocabulary of :mod:`provisioner.orders.status`), what it fetched, when (in the ``timezone``
  setting) and from where; updated live from ``GET /api/v1/events?order=`` (the cookie works
  on the API's reads).
- **Actions**, each a form POST with a CSRF token (derived from the session, checked in
  constant time; the cookie is SameSite=Strict too): bind a MAC (scanned with the camera
  where the browser has ``BarcodeDetector``, typed otherwise, checked as typed) to a planned
  device or a free extension, swap (RMA), unbind, arm, push the switch/IAD (steps live from
  the push job's event stream), unblock an address of the order's devices.

Like every adapter it calls the orders service (and the push and serving APIs) and holds no
session of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from provisioner.api import tokens
from provisioner.api.auth import SESSION_COOKIE, Principal, principal_of
from provisioner.api.deps import resyncer_of
from provisioner.api.problems import DocumentRefused
from provisioner.catalog import MODELS
from provisioner.documents.document import normalize_mac
from provisioner.errors import ProvisionerError
from provisioner.orders.reads import OrderStatus
from provisioner.orders.service import OrdersService
from provisioner.orders.status import TONE, DeviceStatus, State
from provisioner.tech.i18n import Words, pick

HERE = Path(__file__).resolve().parent
PREFIX = "/tech"
STATIC = {
    "tech.css": "text/css; charset=utf-8",
    "tech.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PHONE_MODELS = tuple(k for k, m in MODELS.items() if m.kind == "phone")
# No page of ours is framed, cached by a proxy or tells another site where it came from.
HEADERS = {
    "Cache-Control": "no-store",
    # same-origin: a form post then names its origin (no-referrer would make it "null").
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "Permissions-Policy": "camera=(self)",
}

router = APIRouter(prefix=PREFIX, include_in_schema=False)
_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


# ---------------------------------------------------------------------- plumbing


def _inv(request: Request) -> OrdersService:
    inv: OrdersService = request.app.state.inventory
    return inv


def _words(request: Request) -> Words:
    wanted = request.query_params.get("lang") or request.headers.get("accept-language", "")
    return Words(pick(wanted[:200]))


def _zone(request: Request) -> ZoneInfo:
    try:
        return ZoneInfo(request.app.state.settings.timezone)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def _session(request: Request) -> tuple[Principal, str] | None:
    text = request.cookies.get(SESSION_COOKIE, "")
    principal = principal_of(_inv(request), text[:200])
    return (principal, text) if principal is not None else None


def csrf_token(session_text: str) -> str:
    """The CSRF token of a session: derived from its secret, so nothing is stored."""
    return hmac.new(session_text.encode(), b"provisioner-tech-csrf", hashlib.sha256).hexdigest()


def _render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    words = _words(request)
    zone = _zone(request)

    def when(at: datetime | None) -> str:
        if at is None:
            return "-"
        local = at.astimezone(zone)
        today = datetime.now(zone).date()
        return local.strftime("%H:%M:%S" if local.date() == today else "%d/%m %H:%M")

    html = _env.get_template(name).render(
        t=words, lang=words.lang, when=when, prefix=PREFIX, zone=str(zone), **context
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _actor(principal: Principal) -> str:
    return f"tech:{principal.token.name or principal.token.id}"


def _same_origin(request: Request) -> bool:
    """A browser's form POST names where it comes from; another site's is refused."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


# ---------------------------------------------------------------------- login


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    found = _session(request)
    if found is None:
        return _render(request, "message.html", 401, message_key="login.none")
    principal, _ = found
    orders = sorted(principal.token.orders)
    if len(orders) == 1:
        return RedirectResponse(f"{PREFIX}/orders/{quote(orders[0])}", 303, headers=HEADERS)
    return _render(request, "home.html", orders=orders, scoped=principal.scoped)


@router.get("/login/{code}", response_class=HTMLResponse)
def login_page(request: Request, code: str) -> Response:
    """The link's landing page: a Start button (a link preview that GETs it uses nothing)."""
    if len(code) > 200:
        return _render(request, "message.html", 400, message_key="login.used")
    return _render(request, "login.html", code=code)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, code: Annotated[str, Form(max_length=200)]) -> Response:
    if not _same_origin(request):
        return _render(request, "message.html", 403, message_key="error.csrf")
    source = request.client.host if request.client else ""
    opened = tokens.redeem_link(_inv(request), code, source=source)
    if opened is None:
        return _render(request, "message.html", 401, message_key="login.used")
    orders = sorted(opened.info.orders)
    target = f"{PREFIX}/orders/{quote(orders[0])}" if len(orders) == 1 else f"{PREFIX}/"
    response = RedirectResponse(target, 303, headers=HEADERS)
    max_age = None
    if opened.expires_at is not None:
        left = opened.expires_at - datetime.now(opened.expires_at.tzinfo)
        max_age = max(1, int(left.total_seconds()))
    response.set_cookie(
        SESSION_COOKIE,
        opened.text,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    response = RedirectResponse(f"{PREFIX}/", 303, headers=HEADERS)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# ---------------------------------------------------------------------- the order


def _order_context(
    request: Request, principal: Principal, session_text: str, order_id: str
) -> dict[str, Any]:
    status = _inv(request).read_status(order_id, visible=principal.sees)
    return {
        "o": status,
        "sites": _by_site(status),
        "targets": _bind_targets(status),
        "phone_models": [(k, MODELS[k].title) for k in PHONE_MODELS],
        "csrf": csrf_token(session_text),
        "may": principal.permissions,
        "counts": _counts(status),
        "pushable": [d for d in status.devices if d.pushed and d.identity],
        "states": State,
        "detail": _detail,
        "resync": _resync_line,
        "sig": _signature,
    }


def _by_site(o: OrderStatus) -> list[tuple[str, list[DeviceStatus]]]:
    groups: dict[str, list[DeviceStatus]] = {s.site_id: [] for s in o.sites}
    for d in o.devices:
        groups.setdefault(d.site or "-", []).append(d)
    return [(site, devs) for site, devs in groups.items() if devs]


def _counts(o: OrderStatus) -> list[tuple[str, str, int]]:
    counts = o.counts()
    return [(s.value, TONE[s], counts[s.value]) for s in State if s.value in counts]


def _bind_targets(o: OrderStatus) -> list[tuple[str, str]]:
    """What a box may be bound to: planned devices (by id), then free extensions."""
    out = []
    for d in o.devices:
        if not d.identity and d.identity_kind == "mac":
            what = f" - {d.what}" if d.what else ""
            out.append((f"dev:{d.device_id}", f"{d.device_id} ({d.title}){what}"))
    for e in o.free:
        out.append((f"ext:{e.short}", f"{e.short} {e.name} ({e.site})"))
    return out


def _detail(d: DeviceStatus, t: Words, when: Callable[[datetime | None], str]) -> str:
    """One line saying where the device stands, in the page's language."""
    if d.state == State.planned:
        return t("detail.planned_serial" if d.identity_kind == "serial" else "detail.planned")
    if d.state == State.fetched:
        return t("detail.fetched", file=d.last_file, when=when(d.last_at), source=d.last_source)
    if d.state == State.armed:
        return t("detail.armed", when=when(d.window_until))
    if d.state == State.refused:
        return t("detail.refused", count=d.refusals, when=when(d.last_refused_at),
                 source=d.last_refused_source)  # fmt: skip
    if d.state == State.blocked:
        source = d.last_refused_source or d.last_source or d.bound_source
        return t("detail.blocked", source=source, when=when(d.blocked_until))
    if d.state == State.verified:
        return t("detail.verified", when=when(d.push_at))
    if d.state == State.failed:
        return t("detail.failed", when=when(d.push_at), error=d.push_error[:120])
    if d.state == State.pushing:
        return t("detail.pushing")
    return t("detail.bound")


def _resync_line(d: DeviceStatus, t: Words, when: Callable[[datetime | None], str]) -> str:
    """After a resync (NOTIFY check-sync): sent when, and whether the device fetched since."""
    if d.resync_at is None:
        return ""
    outcome = d.resync_outcome or "?"
    if d.last_at is not None and d.last_at >= d.resync_at:
        return t("resync.refetched", when=when(d.resync_at), outcome=outcome,
                 fetched=when(d.last_at))  # fmt: skip
    return t("resync.waiting", when=when(d.resync_at), outcome=outcome)


def _signature(d: DeviceStatus) -> str:
    """Changes whenever the card of ``d`` would: the page replaces only cards that moved."""
    raw = json.dumps(
        [d.state.value, d.identity, d.last_at, d.last_refused_at, d.window_until, d.push_at,
         d.refusals, d.blocked_until, d.pushing_job, d.resync_at, d.resync_outcome],
        default=str,
    )  # fmt: skip
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _signed_in(request: Request) -> tuple[Principal, str]:
    found = _session(request)
    if found is None:
        raise _SignIn()
    return found


class _SignIn(Exception):
    """No valid session: the page says to open a new link."""


@router.get("/orders/{order_id}", response_class=HTMLResponse)
def order_page(request: Request, order_id: str) -> Response:
    principal, text = _signed_in(request)
    context = _order_context(request, principal, text, order_id)
    done = request.query_params.get("done", "")[:300]
    job = request.query_params.get("job", "")
    if not (len(job) == 32 and all(c in "0123456789abcdef" for c in job)):
        job = ""
    return _render(request, "order.html", notice=done, job=job, **context)


@router.get("/orders/{order_id}/checklist", response_class=HTMLResponse)
def checklist(request: Request, order_id: str) -> Response:
    """The checklist alone: what the page swaps in when the event stream says it moved."""
    principal, text = _signed_in(request)
    return _render(request, "checklist.html", **_order_context(request, principal, text, order_id))


# ---------------------------------------------------------------------- actions


@dataclass(frozen=True)
class _Acting:
    """An action under way, as its ``run`` sees it: the order, the signed-in technician and
    the page's words."""

    request: Request
    order_id: str
    principal: Principal
    t: Words

    @property
    def inv(self) -> OrdersService:
        return _inv(self.request)

    @property
    def actor(self) -> str:
        return _actor(self.principal)


@dataclass(frozen=True)
class _Post:
    """What every action's form posts besides its own fields: the order (in the path) and
    the CSRF token."""

    request: Request
    order_id: str
    csrf: str

    def act(self, permission: str, action: Callable[[_Acting], str]) -> Response:
        """Check the session, the CSRF token and the right, run ``action``; on success back
        to the order (the notice it returns shown), on a refusal the page with the reason."""
        request, order_id = self.request, self.order_id
        principal, text = _signed_in(request)
        words = _words(request)
        if not _same_origin(request) or not hmac.compare_digest(self.csrf, csrf_token(text)):
            return _render(request, "message.html", 403, message_key="error.csrf")
        if not principal.sees(order_id):
            raise HTTPException(404, f"order {order_id}: not in the store")
        if permission not in principal.permissions:
            raise HTTPException(403, f"role {principal.role} may not {permission}")
        try:
            notice = action(_Acting(request, order_id, principal, words))
        except (ProvisionerError, _Refused, DocumentRefused) as exc:
            error = _reason(exc)
            status = 409 if not isinstance(exc, _Refused) else 422
            context = _order_context(request, principal, text, order_id)
            return _render(request, "order.html", status, error=error, notice="", job="", **context)
        target = f"{PREFIX}/orders/{quote(order_id)}?done={quote(notice)}"
        if notice.startswith("job:"):
            target = f"{PREFIX}/orders/{quote(order_id)}?job={notice[4:]}&done="
        return RedirectResponse(target, 303, headers=HEADERS)


def _post(
    request: Request, order_id: str, csrf: Annotated[str, Form(max_length=100)] = ""
) -> _Post:
    return _Post(request, order_id, csrf)


Post = Annotated[_Post, Depends(_post)]


class _Refused(Exception):
    """A form the page refuses itself (an address that is not one), in the page's words."""


def _reason(exc: Exception) -> str:
    if isinstance(exc, DocumentRefused):
        return "; ".join(f"{v.path}: {v.message}" for v in exc.violations) or exc.detail
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@router.post("/orders/{order_id}/bind")
def bind(
    post: Post,
    mac: Annotated[str, Form(max_length=40)],
    target: Annotated[str, Form(max_length=60)],
    model: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    def run(a: _Acting) -> str:
        kind, _, name = target.partition(":")
        if kind == "ext" and name.isdigit():
            done = a.inv.bind(
                a.order_id, mac=mac.strip(), extension=int(name), model=model or None, actor=a.actor
            )
        else:
            done = a.inv.bind(a.order_id, mac=mac.strip(), device_id=name, actor=a.actor)
        return a.t("done.bound", device=done.device_id, mac=normalize_mac(mac))

    return post.act("devices:bind", run)


@router.post("/orders/{order_id}/swap")
def swap(
    post: Post,
    old: Annotated[str, Form(max_length=40)],
    new: Annotated[str, Form(max_length=40)],
) -> Response:
    def run(a: _Acting) -> str:
        done = a.inv.swap(a.order_id, old, new.strip(), actor=a.actor)
        return a.t("done.swapped", device=done.device_id, mac=normalize_mac(new))

    return post.act("devices:bind", run)


@router.post("/orders/{order_id}/unbind")
def unbind(post: Post, device: Annotated[str, Form(max_length=60)]) -> Response:
    def run(a: _Acting) -> str:
        done = a.inv.unbind(a.order_id, device_id=device, actor=a.actor)
        return a.t("done.unbound", device=done.device_id)

    return post.act("devices:bind", run)


@router.post("/orders/{order_id}/arm")
def arm(post: Post, minutes: Annotated[int, Form(ge=1, le=7 * 24 * 60)] = 60) -> Response:
    def run(a: _Acting) -> str:
        armed = a.inv.arm(a.order_id, minutes, actor=a.actor, only="order")
        until = armed.expires_at.astimezone(_zone(a.request)).strftime("%H:%M")
        return a.t("done.armed", count=len(armed.devices), when=until)

    return post.act("devices:arm", run)


@router.post("/orders/{order_id}/resync")
def resync(post: Post, mac: Annotated[str, Form(max_length=40)]) -> Response:
    """Tell one phone or DECT base to re-fetch now (SIP NOTIFY check-sync)."""

    def run(a: _Acting) -> str:
        resyncer = resyncer_of(a.request)
        done = resyncer.resync(mac, actor=a.actor, visible=lambda o: o == a.order_id)
        r = done[0]
        return a.t("done.resync", device=r.target.device_id, outcome=r.answer.text)

    return post.act("devices:resync", run)


@router.post("/orders/{order_id}/push")
async def push(request: Request, order_id: str) -> Response:
    """Push the devices whose address the form gives (``target-<device id>`` = IP:port)."""
    form = await request.form()
    csrf = str(form.get("csrf", ""))[:100]
    dry_run = str(form.get("dry_run", "")) == "on"
    targets = {
        str(k)[len("target-") :]: str(v).strip()[:60]
        for k, v in list(form.items())[:100]
        if str(k).startswith("target-") and str(v).strip()
    }

    def run(a: _Acting) -> str:
        from provisioner.api import schemas
        from provisioner.api.routes.push import start_push

        if not targets:
            raise _Refused(a.t("error.targets"))
        parsed = {}
        for device, value in targets.items():
            host, sep, port = value.rpartition(":")
            host = host.strip("[]")
            try:
                ipaddress.ip_address(host)
                number = int(port)
            except ValueError:
                raise _Refused(a.t("error.address", device=device, value=value)) from None
            if not sep or not 1 <= number <= 65535:
                raise _Refused(a.t("error.address", device=device, value=value))
            parsed[device] = {"host": host, "port": number}
        body = schemas.PushCreate.model_validate(
            {"targets": parsed, "dry_run": dry_run, "trust_on_first_use": True}
        )
        try:
            answer = start_push(a.principal, a.inv, request, order_id, body)
        except HTTPException as exc:
            raise _Refused(str(exc.detail)) from None
        return "job:" + json.loads(bytes(answer.body))["id"]

    from fastapi.concurrency import run_in_threadpool

    return await run_in_threadpool(_Post(request, order_id, csrf).act, "devices:push", run)


@router.post("/orders/{order_id}/unblock")
def unblock(post: Post, source: Annotated[str, Form(max_length=45)]) -> Response:
    """Lift the block of an address the order's own devices use (a technician may lift no
    other: that is the NOC's ``blocks:lift``)."""

    def run(a: _Acting) -> str:
        from provisioner.serving import blocks

        status = a.inv.read_status(a.order_id, visible=a.principal.sees)
        if source not in status.blocks and "blocks:lift" not in a.principal.permissions:
            raise _Refused(a.t("error.unblock", source=source))
        blocks.lift(a.inv, source, a.actor)
        return a.t("done.unblocked", source=source)

    return post.act("devices:bind", run)


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        raise HTTPException(404, "not found")
    return FileResponse(
        HERE / "static" / name,
        media_type=STATIC[name],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def mount(app: FastAPI) -> None:
    """Serve the page from ``app`` (the REST API's application) under ``/tech/``."""
    app.include_router(router)

    async def sign_in(request: Request, exc: Exception) -> Response:
        return _render(request, "message.html", 401, message_key="error.session")

    app.add_exception_handler(_SignIn, sign_in)
