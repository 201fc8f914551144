"""Reading order documents: bad input gets one line with file and line, exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.documents.document import normalize_mac

SAMPLE = Path("inventory/orders/WT-2026-000104.yaml")


def _validate(tmp_path: Path, text: str) -> tuple[int, str]:
    f = tmp_path / "order.yaml"
    f.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(f)])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        # malformed YAML: the line of the error
        ("lines: 2\n", "lines: [2\n", ":9: WT-2026-000104: (document): YAML syntax"),
        # unknown key (a typo must not pass silently)
        ("lines: 2\n", "lines: 2\nline: 2\n", ":9: WT-2026-000104: line: unknown key"),
        ("    connectivity: fwa", "    conectivity: fwa", "sites[0].conectivity: unknown key"),
        # wrong types
        (
            "lines: 2\n",
            "lines: two\n",
            ":8: WT-2026-000104: lines: Input should be a valid integer",
        ),
        ("short: 202,", 'short: "202",', "extensions[2].short: Input should be a valid integer"),
        # unquoted E.164 number is read as an integer by YAML: say to quote it
        (
            'number: "+390957001102"',
            "number: +390957001102",
            "extensions[2].number: 390957001102 must be a quoted string",
        ),
        # bad numbers and MACs
        (
            '"+390957001103", short: 203',
            '"0957001103", short: 203',
            "extensions[3].number: '0957001103' is not an E.164 number",
        ),
        (
            'mac: "00:80:f0:20:00:02"',
            'mac: "00:80:f0:20:00:0g"',
            "devices[3].mac: not a MAC address: 00:80:f0:20:00:0g (12 hex digits, e.g. "
            "00:80:f0:12:34:56)",
        ),
        (
            'mac: "00:80:f0:20:00:02"',
            'mac: "01:00:5e:00:00:01"',
            "devices[3].mac: not a device's MAC address: 01:00:5e:00:00:01 is a multicast address",
        ),
        # duplicate keys are refused, not silently overwritten
        ("lines: 2\n", "lines: 2\nlines: 3\n", ":9: WT-2026-000104: lines: duplicate key"),
        ("plan: office_plus", "plan: office_pluss", "plan: must be one of"),
        ("vat: IT03692581477", "vat: IT03692581478", "customer.vat: 'IT03692581478' has a wrong"),
    ],
)
def test_bad_input_one_line_with_file_and_line(
    tmp_path: Path, old: str, new: str, expect: str
) -> None:
    text = SAMPLE.read_text()
    assert old in text, old
    code, output = _validate(tmp_path, text.replace(old, new, 1))
    assert code == 1
    assert expect in output, output
    assert "Traceback" not in output
    errors = [ln for ln in output.splitlines() if "order.yaml" in ln]
    assert all(ln.startswith(str(tmp_path / "order.yaml") + ":") for ln in errors), errors


def test_secret_value_never_echoed_in_errors(tmp_path: Path) -> None:
    text = SAMPLE.read_text().replace(
        "name: Sala 1, site: catania}", "name: Sala 1, site: catania, sip_password: 12345}"
    )
    code, output = _validate(tmp_path, text)
    assert code == 1
    assert "extensions[2].sip_password: not a valid secret" in output
    assert "12345" not in output


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "\xff\xfe garbage"])
def test_not_an_order(tmp_path: Path, text: str) -> None:
    code, output = _validate(tmp_path, text)
    assert code == 1
    assert "order.yaml" in output
    assert "Traceback" not in output


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "nope.yaml" in result.output
    assert "cannot read" in result.output


@pytest.mark.parametrize(
    "spelling", ["00:80:F0:00:00:01", "00-80-f0-00-00-01", "0080.f000.0001", "0080f0000001"]
)
def test_mac_spellings_stored_in_one(spelling: str) -> None:
    assert normalize_mac(spelling) == "00:80:f0:00:00:01"


def test_one_order_id_in_two_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(SAMPLE.read_text())
    (tmp_path / "b.yaml").write_text(SAMPLE.read_text())
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "order WT-2026-000104 is also in" in result.output
