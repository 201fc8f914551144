"""The phone files' INI check (run at every publish) gives configparser's answers.

``check_temporis_ini`` is a one-pass check written for speed; ``parse_temporis_ini`` is
configparser in the strict mode the phones' format needs. A file one accepts and the other
refuses would either publish a file a phone cannot read or refuse a good order, so the two
are compared on random documents built from the lines these files are made of (and the
awkward ones: indented headers, continuation lines, ``[DEFAULT]``, duplicates, stray
``]``, carriage returns).
"""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.render.engine import check_format, check_temporis_ini, parse_temporis_ini

GOLDEN = Path(__file__).parent / "golden"


def reference(text: str) -> str | None:
    """configparser's verdict: None when the file is good, else why not."""
    try:
        sections = parse_temporis_ini(text)
    except configparser.Error as exc:
        return str(exc).splitlines()[0]
    if not sections:
        return "no section"
    for name, keys in sections:
        if not keys.get("path"):
            return f"section [ {name} ] has no path="
    return None


def fast(text: str) -> str | None:
    try:
        check_temporis_ini(text)
    except ValueError as exc:
        return str(exc)
    return None


LINES = st.one_of(
    st.sampled_from(
        [
            "[ account ]",
            "[account]",
            "  [ account ]",
            "[ DEFAULT ]",
            "[DEFAULT]",
            "[ a ]x",
            "[a]=b",
            "[ a ] ]",
            "[]",
            "path = /config/voip/sipAccount0.cfg",
            "path=/x",
            "path =",
            "path = ",
            "  path = /y",
            "Enable = 1",
            "Enable = 0",
            "Label = Mario Rossi",
            "Value = a=b",
            "= nothing",
            " = nothing",
            "no delimiter here",
            "  continued value",
            "\tcontinued",
            "# comment",
            "; comment",
            "  # indented comment",
            "",
            "   ",
            "[ a ]\r",
            "path = /z\r",
        ]
    ),
    st.builds(
        lambda k, v: f"{k} = {v}",
        st.sampled_from(["path", "k", "K", "Enable"]),
        st.text("ab/ =#[]", max_size=6),
    ),
)


HEADERS = st.sampled_from(
    [
        "[ account ]",
        "[ account ]",
        "[ common ]",
        "  [ memory1 ]",
        "[DEFAULT]",
        "[DEFAULT]\r",
        "[ a ]x",
        "[a]",
    ]
)
BLOCKS = st.lists(
    st.tuples(HEADERS, st.just("path = /config/x.cfg") | LINES, st.lists(LINES, max_size=5)),
    max_size=5,
)


@settings(max_examples=examples(500, 20_000), deadline=None)
@given(st.lists(st.sampled_from(["", "# c", "  ; c", "k = v", "  x"]), max_size=2), BLOCKS)
def test_the_fast_check_agrees_with_configparser(
    preamble: list[str], blocks: list[tuple[str, str, list[str]]]
) -> None:
    lines = [*preamble, *(line for h, first, rest in blocks for line in (h, first, *rest))]
    text = "\n".join(lines) + "\n"
    want, got = reference(text), fast(text)
    assert (want is None) == (got is None), (text, want, got)
    if want is not None and want.endswith("has no path="):
        assert got == want


@pytest.mark.parametrize(
    "path",
    sorted(GOLDEN.glob("alcatel-temporis-*/*.cfg")),
    ids=lambda p: p.parent.name + "/" + p.name,
)
def test_every_golden_phone_file_passes(path: Path) -> None:
    text = path.read_text()
    assert reference(text) is None
    check_format("ini", text)


def test_a_refused_file_names_the_line() -> None:
    with pytest.raises(ValueError, match=r"^line 4: key 'Enable' twice in one section$"):
        check_temporis_ini("[ a ]\npath = /x\nEnable = 1\nEnable = 2\n")
    with pytest.raises(ValueError, match=r"^line 2: not key = value: 'no delimiter'$"):
        check_temporis_ini("[ a ]\nno delimiter\npath = /x\n")
