"""What is wrong with an order document, said the same way everywhere: a path, a line, a message.

Shared by the readers (:mod:`provisioner.documents.loaders`), the shape check
(:mod:`provisioner.documents.document`) and the rules (:mod:`provisioner.documents.rules`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def shown(value: object, limit: int = 40) -> str:
    """A user's value as an error line may quote it: control characters escaped, cut short."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return text if len(text) <= limit else text[:limit] + "..."


Loc = tuple[int | str, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: where (path and line) and what.

    ``needs``: for a broken rule, the top-level lists (``sites``, ``extensions``, ``devices``,
    ``numbers``, ``options``) it judges as a whole; when the rules run on a document that had
    ill-shaped items left out of one of them, such a violation may be an effect of the
    leaving out and is not reported (see :class:`WellShaped`).
    """

    path: str
    message: str
    limit: str = ""
    line: int | None = None
    needs: frozenset[str] = frozenset()

    def format(self, file: str, order: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        text = f"{where}: {order or '?'}: {self.path or '(document)'}: {self.message}"
        return f"{text} ({self.limit})" if self.limit else text


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_path(loc: Loc) -> str:
    """``("extensions", 2, "type")`` -> ``extensions[2].type``.

    A key that is not a name (an unknown key of a hostile document) is shown escaped and cut
    short in quotes, so that a problem stays one line.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part) if _NAME.fullmatch(str(part)) else f'"{shown(part)}"'
        out += f".{text}" if out else text
    return out


_PATH_PART = re.compile(r"\[(\d+)\]|\.?([A-Za-z_][A-Za-z0-9_]*)")


def parse_path(path: str) -> Loc:
    """``extensions[2].type`` -> ``("extensions", 2, "type")`` (the inverse of format_path)."""
    return tuple(
        int(m.group(1)) if m.group(1) is not None else m.group(2) for m in _PATH_PART.finditer(path)
    )


class DocumentProblem(Exception):
    """Raised while reading YAML or JSON; carries the one :class:`Problem`."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(problem.message)
