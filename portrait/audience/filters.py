"""The audience filter language: a small JSON tree over tags and features, compiled to DuckDB SQL safely.

A filter is one of:

* a **condition** ``{"field": "churn_tier", "op": "in", "value": ["high", "medium"]}``;
* ``{"and": [filter, ...]}``, ``{"or": [filter, ...]}`` (at least one member each), ``{"not": filter}``.

Operators: ``eq`` / ``ne`` (also ``=``, ``!=``), ``lt`` / ``lte`` / ``gt`` / ``gte`` (also ``<``, ``<=``,
``>``, ``>=``), ``between`` (``[low, high]``, both inclusive), ``in`` / ``not_in`` (a non-empty list),
``is_null`` / ``not_null`` (no value). Fields are the population's columns: tag tiers and scores
(``churn_tier``, ``conversion_probability``, ``value_predicted``, ...), ``lifecycle_stage``, ``rfm_segment``
and every feature of the latest snapshot (``spend_365d``, ``region``, ...).

The structure is checked by pydantic (:class:`Filter`); :func:`compile_filter` then checks each field against
the population's columns (a whitelist: only known names reach SQL, quoted as identifiers) and each value
against the column's type, and gives SQL with ``?`` placeholders plus the parameters. No value is ever
written into the SQL text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

MAX_CONDITIONS = 64
MAX_DEPTH = 8
MAX_LIST = 1_000

Op = Literal[
    "eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "not_in", "is_null", "not_null",
    "=", "==", "!=", "<", "<=", ">", ">=",
]  # fmt: skip
ALIASES = {"=": "eq", "==": "eq", "!=": "ne", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
_SQL_OPS = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
Scalar = str | float | bool
ColumnKind = Literal["number", "text", "boolean"]


class FilterError(ValueError):
    """A filter that cannot be applied to the population; the message names the problem."""


class Condition(BaseModel):
    """One test on one column, e.g. ``{"field": "spend_365d", "op": ">=", "value": 100}``."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(min_length=1, max_length=128, description="A column of the population.")
    op: Op = Field(description="eq, ne, lt, lte, gt, gte, between, in, not_in, is_null or not_null.")
    value: Scalar | list[Scalar] | None = Field(
        None, description="A number or text; [low, high] for between; a list for in / not_in; none for nulls."
    )


class AllOf(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    all_of: list[Filter] = Field(alias="and", min_length=1, max_length=MAX_CONDITIONS)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    any_of: list[Filter] = Field(alias="or", min_length=1, max_length=MAX_CONDITIONS)


class NoneOf(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    negated: Filter = Field(alias="not")


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        for key in ("and", "or", "not"):
            if key in value:
                return key
        return "condition"
    if isinstance(value, AllOf):
        return "and"
    if isinstance(value, AnyOf):
        return "or"
    if isinstance(value, NoneOf):
        return "not"
    return "condition"


Filter = Annotated[
    Annotated[Condition, Tag("condition")]
    | Annotated[AllOf, Tag("and")]
    | Annotated[AnyOf, Tag("or")]
    | Annotated[NoneOf, Tag("not")],
    Discriminator(_kind),
]
"""A filter: a condition, or ``and`` / ``or`` of filters, or ``not`` of one."""

AllOf.model_rebuild()
AnyOf.model_rebuild()
NoneOf.model_rebuild()


@dataclass(frozen=True)
class Compiled:
    """A filter as a SQL boolean expression with ``?`` placeholders, and their values in order."""

    sql: str
    params: list[Any]
    fields: list[str]


def quote(name: str) -> str:
    """A column name as a DuckDB identifier (names come from the whitelist; quotes are doubled anyway)."""
    return '"' + name.replace('"', '""') + '"'


def compile_filter(node: Any, columns: Mapping[str, ColumnKind]) -> Compiled:
    """The SQL of ``node`` (a :data:`Filter` or its JSON) over a table with ``columns`` (name -> kind).

    Raises :class:`FilterError` naming the first problem: an unknown field (with the close matches), a value
    of the wrong type, a list where one value is expected, too many conditions or too deep a tree.
    """
    if isinstance(node, Mapping):
        from pydantic import TypeAdapter, ValidationError

        try:
            node = TypeAdapter(Filter).validate_python(node)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise FilterError(f"bad filter at {where or 'top'}: {first.get('msg', '')}") from None
    params: list[Any] = []
    fields: list[str] = []
    counter = {"conditions": 0}
    sql = _compile(node, columns, params, fields, counter, depth=1, path="filter")
    return Compiled(sql, params, fields)


def _compile(
    node: Any,
    columns: Mapping[str, ColumnKind],
    params: list[Any],
    fields: list[str],
    counter: dict[str, int],
    *,
    depth: int,
    path: str,
) -> str:
    if depth > MAX_DEPTH:
        raise FilterError(f"{path}: the filter is nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, AllOf | AnyOf):
        members = node.all_of if isinstance(node, AllOf) else node.any_of
        word = "and" if isinstance(node, AllOf) else "or"
        parts = [
            _compile(m, columns, params, fields, counter, depth=depth + 1, path=f"{path}.{word}[{i}]")
            for i, m in enumerate(members)
        ]
        return "(" + f" {word.upper()} ".join(parts) + ")"
    if isinstance(node, NoneOf):
        inner = _compile(node.negated, columns, params, fields, counter, depth=depth + 1, path=f"{path}.not")
        return f"(NOT coalesce({inner}, FALSE))"
    if not isinstance(node, Condition):
        raise FilterError(f"{path}: not a filter")
    counter["conditions"] += 1
    if counter["conditions"] > MAX_CONDITIONS:
        raise FilterError(f"the filter has more than {MAX_CONDITIONS} conditions")
    return _condition(node, columns, params, fields, path)


def _condition(
    cond: Condition, columns: Mapping[str, ColumnKind], params: list[Any], fields: list[str], path: str
) -> str:
    name = cond.field.strip()
    if name not in columns:
        import difflib

        close = difflib.get_close_matches(name, list(columns), n=3, cutoff=0.6)
        known = sorted(c for c in columns if c != "customer_id")
        listed = ", ".join(known[:20]) + (f", … ({len(known)} in all)" if len(known) > 20 else "")
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known fields include {listed}"
        raise FilterError(f"{path}: unknown field {name!r}{hint}")
    kind = columns[name]
    op = ALIASES.get(cond.op, cond.op)
    column = quote(name)
    fields.append(name)
    where = f"{path} ({name} {op})"
    if op in ("is_null", "not_null"):
        if cond.value is not None:
            raise FilterError(f"{where}: takes no value")
        return f"({column} IS {'NOT ' if op == 'not_null' else ''}NULL)"
    if cond.value is None:
        raise FilterError(f"{where}: needs a value")
    if op in ("in", "not_in"):
        if not isinstance(cond.value, list) or not cond.value:
            raise FilterError(f"{where}: needs a non-empty list of values")
        if len(cond.value) > MAX_LIST:
            raise FilterError(f"{where}: at most {MAX_LIST} values")
        values = [_value(v, kind, where) for v in cond.value]
        params.append(values)
        # ``list_contains`` keeps one placeholder whatever the list's length.
        test = f"list_contains(?, {column})"
        return f"({column} IS NOT NULL AND {'NOT ' if op == 'not_in' else ''}{test})"
    if op == "between":
        if not isinstance(cond.value, list) or len(cond.value) != 2:
            raise FilterError(f"{where}: needs [low, high]")
        low, high = (_value(v, kind, where) for v in cond.value)
        if kind != "number":
            raise FilterError(f"{where}: between needs a numeric field; {name} is {kind}")
        if low > high:
            raise FilterError(f"{where}: low {low} is above high {high}")
        params.extend([low, high])
        return f"({column} BETWEEN ? AND ?)"
    if isinstance(cond.value, list):
        raise FilterError(f"{where}: needs one value, not a list (use 'in' for several)")
    value = _value(cond.value, kind, where)
    if op in ("lt", "lte", "gt", "gte") and kind != "number":
        raise FilterError(f"{where}: {op} needs a numeric field; {name} is {kind}")
    params.append(value)
    return f"({column} {_SQL_OPS[op]} ?)"


def _value(value: Any, kind: ColumnKind, where: str) -> Any:
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FilterError(f"{where}: expects a number, not {value!r}")
        if not math.isfinite(float(value)):
            raise FilterError(f"{where}: expects a finite number, not {value!r}")
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise FilterError(f"{where}: expects true or false, not {value!r}")
        return value
    if not isinstance(value, str):
        raise FilterError(f"{where}: expects text, not {value!r}")
    return value


__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "AllOf",
    "AnyOf",
    "ColumnKind",
    "Compiled",
    "Condition",
    "Filter",
    "FilterError",
    "NoneOf",
    "compile_filter",
    "quote",
]
