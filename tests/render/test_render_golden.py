"""Golden files: what each model of the sample orders gets, byte for byte.

Secrets are generated per run, so they are masked (********) before the comparison; the
masking itself is tested apart. Regenerate with ``pytest --update-golden`` and review the
diff like code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.render.dhcp import dhcp_snippet
from provisioner.render.engine import RenderedFile, Renderer

GOLDEN = Path(__file__).parent / "golden"
SAMPLES = GOLDEN.parents[2] / "inventory" / "orders"
SAMPLE_ORDERS = [p.stem for p in sorted(SAMPLES.glob("*.yaml"))]


def _check_golden(path: Path, data: bytes, update: bool) -> None:
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    assert path.exists(), f"no golden file {path} (run pytest --update-golden and review)"
    assert data.decode() == path.read_text(), f"{path.relative_to(GOLDEN)} differs"


def _first_per_model(files: dict[str, RenderedFile]) -> dict[str, RenderedFile]:
    """Every file of the first device of each model (the others differ only in values)."""
    first: dict[str, str] = {}
    out = {}
    for name, f in sorted(files.items(), key=lambda kv: kv[0]):
        dev = first.setdefault(f.model, f.device_id)
        if dev == f.device_id:
            out[name] = f
    return out


@pytest.mark.parametrize("order_id", SAMPLE_ORDERS)
def test_sample_order_matches_golden(
    renderer: Renderer, order_id: str, update_golden: bool
) -> None:
    files = renderer.render_order(order_id)
    for name, f in _first_per_model(files).items():
        _check_golden(GOLDEN / f.model / name, f.masked(), update_golden)


@pytest.mark.parametrize("fmt", ["dnsmasq", "kea"])
def test_dhcp_snippets_match_golden(renderer: Renderer, fmt: str, update_golden: bool) -> None:
    for order_id, site in [("WT-2026-000123", "milano"), ("WT-2026-000104", "catania")]:
        text = dhcp_snippet(renderer, order_id, site, fmt)
        ext = "conf" if fmt == "dnsmasq" else "json"
        _check_golden(
            GOLDEN / "dhcp" / f"{order_id}-{site}.{fmt}.{ext}", text.encode(), update_golden
        )


def test_every_catalog_model_with_files_has_golden_files(renderer: Renderer) -> None:
    """A model added to the catalog and the samples without golden files is caught here."""
    models = {f.model for o in SAMPLE_ORDERS for f in renderer.render_order(o).values()}
    assert models == {
        "alcatel-temporis-ip150",
        "alcatel-temporis-ip701g",
        "alcatel-ip2215",
        "iad",
        "mini-ont",
        "dlink-dgs-1100-08p",
        "dlink-dgs-1100-24p",
    }
    for model in models:
        assert any((GOLDEN / model).iterdir()), model
