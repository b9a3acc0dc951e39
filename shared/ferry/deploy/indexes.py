"""Which queries need a Firestore composite index — the check the emulator cannot make.

The Firestore emulator serves every query; production refuses a query whose composite index does
not exist. Every query the store adapters run is recorded as a :class:`QueryShape`
(``ferry.store.base.record_query``); :func:`missing` names the shapes that need an index ``infra/``
does not declare. Rules (Firestore native mode):

- single-field indexes exist automatically (both directions) and serve a query on one field;
- equality filters on several fields (``==``, ``in``, at most one ``array_contains``) are served by
  merging single-field indexes, also when ordered by document id;
- an inequality or an ordering on a field together with equality filters on other fields, an
  ordering on a field other than the inequality field, or inequalities on two fields need a
  composite index: equality fields first, then the ordering fields in query order.
"""

from __future__ import annotations

from collections.abc import Iterable

import yaml

from ferry.infra.model import Index, IndexField, Infra
from ferry.store.base import QueryShape

EQUALITY = {"==", "in"}
ARRAY = {"array_contains", "array_contains_any"}
INEQUALITY = {"<", "<=", ">", ">=", "!=", "not-in", "not_in"}
DOCUMENT_ID = "__name__"


Prefix = frozenset[tuple[str, str | None]]
Ordering = list[tuple[str, str]]


def _parts(shape: QueryShape) -> tuple[Prefix, Ordering] | None:
    """The composite index a shape needs, as (equality/array prefix in any order, ordering fields)."""
    equal = sorted({f for f, op in shape.filters if op in EQUALITY})
    arrays = sorted({f for f, op in shape.filters if op in ARRAY})
    unequal = sorted({f for f, op in shape.filters if op in INEQUALITY})
    order = shape.order_by if shape.order_by not in (None, DOCUMENT_ID) else None
    if order in equal and not unequal:
        order = None  # ordering by a field pinned by equality changes nothing
    ordered = ([order] if order else []) + [f for f in unequal if f != order]
    if not ordered:
        return None  # equality only: merged single-field indexes, ordered by id
    if not equal and not arrays and len(ordered) == 1:
        return None  # one field, filtered and/or ordered: its own single-field index
    direction = "DESCENDING" if shape.descending and order else "ASCENDING"
    prefix = frozenset([(f, None) for f in equal if f not in ordered] + [(f, "CONTAINS") for f in arrays])
    return prefix, [(f, direction) for f in ordered]


def required(shape: QueryShape) -> Index | None:
    """The composite index ``shape`` needs, or None when single-field indexes serve it."""
    parts = _parts(shape)
    if parts is None:
        return None
    prefix, ordering = parts
    fields = ([IndexField(field=f, order=None if cfg else "ASCENDING", array_config=cfg)  # type: ignore[arg-type]
               for f, cfg in sorted(prefix, key=lambda p: (p[1] is not None, p[0]))]
              + [IndexField(field=f, order=d) for f, d in ordering])  # type: ignore[arg-type]
    return Index(collection=shape.collection.rsplit("/", 1)[-1], fields=fields)


def serves(declared: Index, shape: QueryShape) -> bool:
    """Whether ``declared`` serves ``shape``: the equality fields first in any order and direction,
    then exactly the ordering fields and directions."""
    parts = _parts(shape)
    if parts is None:
        return True
    prefix, ordering = parts
    if declared.collection != shape.collection.rsplit("/", 1)[-1]:
        return False
    if len(declared.fields) != len(prefix) + len(ordering):
        return False
    head, tail = declared.fields[:len(prefix)], declared.fields[len(prefix):]
    return ({(f.field, f.array_config) for f in head} == prefix
            and [(f.field, f.order) for f in tail] == ordering)


def missing(shapes: Iterable[QueryShape], infra: Infra) -> list[tuple[QueryShape, Index]]:
    """The recorded shapes whose required index ``infra`` does not declare (one entry per index)."""
    out: dict[tuple[object, ...], tuple[QueryShape, Index]] = {}
    for shape in sorted(shapes, key=repr):
        need = required(shape)
        if need is None or any(serves(d, shape) for d in infra.indexes):
            continue
        out.setdefault(need.key(), (shape, need))
    return list(out.values())


def describe(shape: QueryShape) -> str:
    parts = [f"{f} {op}" for f, op in shape.filters]
    if shape.order_by:
        parts.append(f"order by {shape.order_by}{' desc' if shape.descending else ''}")
    return f"{shape.collection}: " + (", ".join(parts) or "all")


def as_yaml(indexes: Iterable[Index]) -> str:
    """The ``infra/*.yaml`` snippet that declares ``indexes``."""
    docs = [{"collection": ix.collection,
             "fields": [{"field": f.field, **({"array_config": f.array_config} if f.array_config
                                              else {"order": f.order})} for f in ix.fields]}
            for ix in indexes]
    return yaml.safe_dump({"indexes": docs}, sort_keys=False, default_flow_style=None)
