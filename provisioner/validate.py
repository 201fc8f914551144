"""Validate order documents: shape (document) then the offer's rules, every problem at once."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from provisioner.document import (
    OrderDocument,
    ParsedDocument,
    Problem,
    collect_files,
    format_path,
    parse_file,
    parse_text,
)
from provisioner.rules import check_order

_INDEX = re.compile(r"\[\d+\]$|\.[^.\[]+$")


@dataclass
class Checked:
    """One document after validation: its order (when valid) and every problem as a line."""

    file: str
    order_id: str
    document: OrderDocument | None
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return self.document is not None and not self.problems

    def lines(self) -> list[str]:
        return [p.format(self.file, self.order_id) for p in self.problems]


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
    document = parsed.document if not problems else None
    return Checked(parsed.file, parsed.order_id, document, problems)


def check_text(text: str, file: str = "<text>") -> Checked:
    return check_parsed(parse_text(text, file))


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
            r.problems.append(
                Problem("order", f"order {r.order_id} is also in {seen[r.order_id]}", "unique")
            )
            r.document = None
        seen.setdefault(r.order_id, r.file)
    return results
