"""No dead code in the product: every module-level function and class is used somewhere.

A function or class that nothing names (in the package, the lab, the templates or the tests)
is dead weight a newcomer still has to read. Decorated ones are exempt: a decorator registers
them (routes, commands, template filters, event hooks, validators).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "provisioner"
# push/ is being taken apart by its own change (issue 12); its dead code goes with it.
NOT_YET = ("push",)


def _sources() -> list[Path]:
    roots = [PACKAGE, REPO / "lab", REPO / "tests", REPO / "device_templates"]
    return [p for root in roots for p in root.rglob("*") if p.suffix in (".py", ".j2")]


def _definitions() -> list[tuple[Path, str]]:
    out = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in NOT_YET or "migrations" in rel.parts:
            continue
        for node in ast.parse(path.read_text()).body:
            kinds = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
            if isinstance(node, kinds) and not node.decorator_list:
                out.append((path, node.name))
    return out


def test_every_function_and_class_of_the_product_is_used() -> None:
    words = Counter(w for p in _sources() for w in re.findall(r"\w+", p.read_text()))
    unused = [
        f"{path.relative_to(REPO)}: {name}"
        for path, name in _definitions()
        if words[name] < 2  # named only where it is defined
    ]
    assert unused == []
