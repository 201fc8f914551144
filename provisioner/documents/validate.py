"""Validate order documents: shape (document) then the offer's rules, every problem at once.

The rules judge what is well-shaped even when part of a document is not (an item with a bad
field is left out, see :class:`provisioner.documents.document.WellShaped`), so one pass
reports every problem. At most :data:`MAX_REPORTED` problems are reported per document, then
a count.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from provisioner.documents.document import (
    OrderDocument,
    ParsedDocument,
    collect_files,
    parse_file,
    parse_json,
    parse_text,
)
from provisioner.documents.problems import Problem, format_path
from provisioner.documents.rules import check_order

_INDEX = re.compile(r"\[\d+\]$|\.[^.\[]+$")
# Problems reported per document; past it, one line says how many more there are.
MAX_REPORTED = 100


@dataclass
class Checked:
    """One document after validation: its order (when valid) and every problem.

    ``omitted``: problems found but not carried (see :meth:`trimmed`); ``is_mapping``: the
    document was a mapping at all (the API answers anything else as a bad request).
    """

    file: str
    order_id: str
    document: OrderDocument | None
    problems: list[Problem]
    omitted: int = 0
    is_mapping: bool = True

    @property
    def ok(self) -> bool:
        return self.document is not None and not self.problems

    @property
    def total(self) -> int:
        """How many problems the document has in all."""
        return len(self.problems) + self.omitted

    def reported(self) -> list[Problem]:
        """The first :data:`MAX_REPORTED` problems."""
        return self.problems[:MAX_REPORTED]

    def lines(self) -> list[str]:
        """The reported problems as lines, and ``... and N more`` past them."""
        out = [p.format(self.file, self.order_id) for p in self.reported()]
        if self.total > len(out):
            out.append(f"{self.file}: {self.order_id or '?'}: ... and {self.total - len(out)} more")
        return out

    def trimmed(self) -> Checked:
        """This result carrying only the reported problems (and the count of the others)."""
        shown = self.reported()
        return dataclasses.replace(self, problems=shown, omitted=self.total - len(shown))


def _with_lines(parsed: ParsedDocument, problems: list[Problem]) -> list[Problem]:
    by_path = {format_path(k): v for k, v in parsed.lines.items()}
    out = []
    for p in problems:
        path = p.path
        line = None
        while True:
            if path in by_path:
                line = by_path[path]
                break
            if not path:
                break
            shorter = _INDEX.sub("", path)
            path = "" if shorter == path else shorter
        out.append(dataclasses.replace(p, line=line) if p.line is None else p)
    return out


def check_parsed(parsed: ParsedDocument) -> Checked:
    problems = list(parsed.problems)
    if parsed.document is not None and not problems:
        problems = _with_lines(parsed, check_order(parsed.document))
    elif parsed.partial is not None:
        # The rules on the well-shaped rest, without what leaving the rest out may cause.
        found = parsed.partial.relevant(check_order(parsed.partial.document))
        problems += _with_lines(parsed, found)
    document = parsed.document if not problems else None
    return Checked(
        parsed.file,
        parsed.order_id,
        document,
        problems,
        is_mapping=isinstance(parsed.data, dict),
    )


def check_text(text: str, file: str = "<text>") -> Checked:
    return check_parsed(parse_text(text, file))


def check_body(raw: bytes, is_json: bool, file: str = "<api>") -> Checked:
    """Validate a request body (YAML, or JSON read as JSON), keeping only the reported
    problems: what an API worker process sends back."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = Problem("", f"not UTF-8 text (byte {exc.start})")
        return Checked(file, "", None, [problem], is_mapping=False)
    parsed = parse_json(text, file) if is_json else parse_text(text, file)
    return check_parsed(parsed).trimmed()


def check_file(path: Path) -> Checked:
    return check_parsed(parse_file(path))


def check_paths(paths: list[Path]) -> list[Checked]:
    """Validate every order file under ``paths``; also refuses one order id in two files."""
    results = [check_file(f) for f in collect_files(paths)]
    seen: dict[str, str] = {}
    for r in results:
        if not r.order_id:
            continue
        if r.order_id in seen:
            r.problems.insert(
                0, Problem("order", f"order {r.order_id} is also in {seen[r.order_id]}", "unique")
            )
            r.document = None
        seen.setdefault(r.order_id, r.file)
    return results
