"""``provisioner token ...`` (API tokens) and ``provisioner api`` (run the REST API)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from provisioner import audit
from provisioner.cli import _inventory, app, err, handles_errors, out
from provisioner.store.tokens import ROLES

token_app = typer.Typer(
    help="API tokens for the NOC REST API (stored hashed; shown once).",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")


@token_app.command("create")
@handles_errors
def token_create(
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}.")],
    order: Annotated[
        list[str] | None,
        typer.Option("--order", help="Order a technician token may act on (repeat)."),
    ] = None,
    name: Annotated[str, typer.Option(help="Name shown in the audit log (api:NAME).")] = "",
) -> None:
    """Make an API token and print it once; only its hash is stored.

    Examples:
      provisioner token create --role noc --name dashboard
      provisioner token create --role technician --order WT-2026-000123 --name mario
    """
    from provisioner.store import tokens

    inv = _inventory()
    with inv.db.write() as session:
        row, text = tokens.create(
            session, role, name=name, orders=order or [], actor=audit.default_actor()
        )
        audit.record(
            session,
            audit.default_actor(),
            "token.created",
            token_id=row.id,
            token_name=row.name,
            role=role,
            orders=row.order_ids,
        )
        token_id, token_name = row.id, row.name
    err.print(f"token {token_id} ({token_name}, {role}); store it now, it is not shown again:")
    out.print(text, markup=False)


@token_app.command("list")
@handles_errors
def token_list() -> None:
    """List API tokens (never the tokens themselves).

    Example: provisioner token list
    """
    from provisioner.store import tokens

    inv = _inventory()
    with inv.db.read() as session:
        rows = tokens.list_tokens(session)
        table = Table("id", "name", "role", "orders", "created", "revoked")
        for r in rows:
            table.add_row(
                str(r.id),
                r.name,
                r.role,
                ",".join(json.loads(r.orders)) or "-",
                r.created_at.strftime("%Y-%m-%d %H:%M"),
                r.revoked_at.strftime("%Y-%m-%d %H:%M") if r.revoked_at else "-",
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
    from provisioner.store import tokens

    inv = _inventory()
    with inv.db.write() as session:
        row = tokens.revoke(session, token_id)
        audit.record(
            session, audit.default_actor(), "token.revoked", token_id=row.id, token_name=row.name
        )
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
    from provisioner.httpserver import server_config

    inv = _inventory()
    uvicorn.Server(server_config(create_app(inv.settings, inv), inv.settings, host, port)).run()
