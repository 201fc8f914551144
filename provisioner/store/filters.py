"""Filters of listings: a select narrowed by what the caller gave, a filter not given left out."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from sqlalchemy import Select

# A select of any row shape.
S = TypeVar("S", bound="Select[*tuple[Any, ...]]")


def where_equal(stmt: S, given: Mapping[Any, Any]) -> S:
    """``stmt`` narrowed to the rows whose columns (the keys) equal their given values; a
    None or empty value is a filter left out."""
    for column, value in given.items():
        if value:
            stmt = stmt.where(column == value)
    return stmt


def where_in(stmt: S, column: Any, values: Collection[str] | None) -> S:
    """``stmt`` narrowed to the rows whose ``column`` is one of ``values``; None: all of them
    (a scoped caller's order ids, or no scope)."""
    return stmt if values is None else stmt.where(column.in_(sorted(values)))
