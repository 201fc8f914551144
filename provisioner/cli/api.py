"""``provisioner token ...`` (API tokens) and ``provisioner api`` (run the REST API)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from provisioner.cli.app import _inventory, app, err, handles_errors, out

token_app = typer.Typer(
    help="API tokens for the NOC REST API (stored hashed; shown once).",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")


@token_app.command("create")
@handles_errors
def token_create(
    role: Annotated[str, typer.Option(help="viewer, technician, noc or admin (README: Roles).")],
    order: Annotated[
        list[str] | None,
        typer.Option("--order", help="Order a technician token may act on (repeat)."),
    ] = None,
    name: Annotated[str, typer.Option(help="Name shown in the audit log (api:NAME).")] = "",
    expires: Annotated[
        str | None,
        typer.Option(
            help="How long the token works: 90m, 12h, 30d, or never. "
            "Default: 12h for technician tokens, 90d for the others.",
            show_default=False,
        ),
    ] = None,
    link: Annotated[
        bool,
        typer.Option(
            "--link",
            help="Print a one-time login link to the technician page (and its QR code) "
            "instead of the token.",
        ),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            help="Where the technician's phone reaches the server (default: "
            "http://PROVISIONING_HOST[:HTTP_PORT]).",
            show_default=False,
        ),
    ] = None,
    qr: Annotated[bool, typer.Option(help="Print the link's QR code too.")] = True,
) -> None:
    """Make an API token and print it once; only its hash is stored.

    With --link: a one-time login link to the technician page (/tech/) and its QR code.
    Opening it on the phone starts a session that sees the token's orders until the token
    expires; the link works once.

    Examples:

      provisioner token create --role noc --name dashboard --expires 30d

      provisioner token create --role technician --order WT-2026-000123 --name mario

      provisioner token create --role technician --order WT-2026-000123 --link
    """
    from provisioner.api import tokens

    inv = _inventory()
    issued = tokens.issue(inv, role, name=name, orders=order or [], expires=expires, link=link)
    token_id, token_name = issued.token.id, issued.token.name
    until = _when(issued.token.expires_at)
    lasts = f"expires {until} UTC" if until else "never expires"
    if not link:
        err.print(
            f"token {token_id} ({token_name}, {role}, {lasts}); store it now, it is not shown "
            "again:",
            markup=False,
        )
        out.print(issued.text, markup=False)
        return
    base = (url or _default_url(inv.settings)).rstrip("/")
    address = f"{base}/tech/login/{issued.text}"
    err.print(
        f"token {token_id} ({token_name}, {role}, {lasts}): a one-time login link, for the "
        "technician's phone only:",
        markup=False,
    )
    out.print(address, markup=False)
    if qr:
        import io

        import segno

        text = io.StringIO()
        segno.make(address, error="m").terminal(out=text, compact=True, border=2)
        out.print(text.getvalue(), markup=False, end="")


def _default_url(settings: Any) -> str:
    port = settings.http_port
    host = settings.provisioning_host
    return f"http://{host}" if port == 80 else f"http://{host}:{port}"


def _when(at: datetime | None) -> str:
    """A stored time as the token commands show it (UTC, to the minute); "" for none."""
    return at.strftime("%Y-%m-%d %H:%M") if at is not None else ""


@token_app.command("list")
@handles_errors
def token_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """List API tokens (never the tokens themselves), with when each expires (UTC).

    Examples:

      provisioner token list

      provisioner token list --json
    """
    from rich.table import Table

    from provisioner.api import tokens

    rows = tokens.listing(_inventory())
    if as_json:
        import json

        items = [
            {"id": r.id, "name": r.name, "role": r.role, "orders": r.orders,
             "created_at": r.created_at.isoformat(),
             "expires_at": r.expires_at.isoformat() if r.expires_at else None,
             "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
             "expired": r.expired}
            for r in rows
        ]  # fmt: skip
        out.print(json.dumps(items, indent=2), markup=False)
        return
    table = Table("id", "name", "role", "orders", "created", "expires", "revoked")
    for r in rows:
        if r.expires_at is None:
            expiry = "never"
        elif r.expired:
            expiry = f"expired {_when(r.expires_at)}"
        else:
            expiry = _when(r.expires_at)
        table.add_row(
            str(r.id),
            r.name,
            r.role,
            ",".join(r.orders) or "-",
            _when(r.created_at),
            expiry,
            _when(r.revoked_at) or "-",
        )
    if not rows:
        out.print("no API tokens (try: provisioner token create --role viewer)")
        return
    out.print(table)


@token_app.command("revoke")
@handles_errors
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="Token id (see token list).")],
) -> None:
    """Revoke a token: it is refused from the next request on.

    Example: provisioner token revoke 3
    """
    from provisioner.api import tokens

    tokens.revoke(_inventory(), token_id)
    out.print(f"token {token_id} revoked", markup=False)


@app.command("api")
@handles_errors
def api_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
) -> None:
    """Run the NOC REST API (OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs).

    Example: provisioner api --host 127.0.0.1 --port 8080
    """
    import uvicorn

    from provisioner.api.app import create_app
    from provisioner.serving.httpserver import server_config

    inv = _inventory()
    uvicorn.Server(server_config(create_app(inv.settings, inv), inv.settings, host, port)).run()
