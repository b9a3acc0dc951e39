from __future__ import annotations

import pytest

from ferry.deploy.indexes import as_yaml, missing, required
from ferry.infra.model import Index, Infra
from ferry.store import base
from ferry.store.base import QueryShape, Where
from ferry.store.memory import MemoryStore


def shape(collection: str, *filters: tuple[str, str], order_by: str | None = None, desc: bool = False) -> QueryShape:
    return QueryShape(collection, tuple(sorted(filters)), order_by, desc)


def fields(ix: Index | None) -> list[tuple[str, str | None]]:
    assert ix is not None
    return [(f.field, f.array_config or f.order) for f in ix.fields]


@pytest.mark.parametrize("s", [
    shape("c"),
    shape("c", order_by="due_at"),
    shape("c", order_by="due_at", desc=True),
    shape("c", ("due_at", "<=")),
    shape("c", ("due_at", "<="), order_by="due_at", desc=True),
    shape("c", ("state", "==")),
    shape("c", ("state", "=="), ("owner", "==")),          # zigzag merge of single-field indexes
    shape("c", ("state", "in"), ("owner", "==")),
    shape("c", ("tags", "array_contains"), ("owner", "==")),
    shape("c", ("state", "=="), order_by="__name__", desc=True),
    shape("c", ("state", "=="), order_by="state"),
])
def test_single_field_indexes_serve(s: QueryShape) -> None:
    assert required(s) is None


def test_equality_and_inequality_on_different_fields_need_a_composite() -> None:
    assert fields(required(shape("instances", ("state", "=="), ("due_at", "<=")))) == [
        ("state", "ASCENDING"), ("due_at", "ASCENDING")]


def test_equality_and_ordering_need_a_composite_with_the_direction() -> None:
    ix = required(shape("alerts", ("endpoint", "=="), ("open", "=="), order_by="raised_at", desc=True))
    assert ix is not None and ix.collection == "alerts"
    assert fields(ix) == [("endpoint", "ASCENDING"), ("open", "ASCENDING"), ("raised_at", "DESCENDING")]


def test_ordering_on_another_field_than_the_inequality() -> None:
    assert fields(required(shape("c", ("size", ">"), order_by="created_at"))) == [
        ("created_at", "ASCENDING"), ("size", "ASCENDING")]


def test_inequalities_on_two_fields() -> None:
    assert fields(required(shape("c", ("a", ">"), ("b", "<")))) == [("a", "ASCENDING"), ("b", "ASCENDING")]


def test_array_contains_with_ordering() -> None:
    assert fields(required(shape("c", ("tags", "array_contains"), order_by="t"))) == [
        ("tags", "CONTAINS"), ("t", "ASCENDING")]


def test_subcollections_are_indexed_by_collection_group() -> None:
    ix = required(shape("workflows/w1/instances", ("state", "=="), order_by="due_at"))
    assert ix is not None and ix.collection == "instances"


def _infra(*indexes: dict) -> Infra:
    return Infra.model_validate({"indexes": list(indexes)})


def test_missing_names_the_undeclared_index_and_accepts_a_declared_one() -> None:
    shapes = {shape("instances", ("state", "=="), ("due_at", "<=")),
              shape("instances", ("workflow", "==")),
              shape("alerts", ("open", "=="), order_by="raised_at", desc=True)}
    gaps = missing(shapes, _infra({"collection": "instances", "fields": [{"field": "state"}, {"field": "due_at"}]}))
    assert [(s.collection, fields(ix)) for s, ix in gaps] == [
        ("alerts", [("open", "ASCENDING"), ("raised_at", "DESCENDING")])]
    snippet = as_yaml([ix for _, ix in gaps])
    assert "collection: alerts" in snippet and "order: DESCENDING" in snippet
    assert Infra.model_validate(__import__("yaml").safe_load(snippet)).indexes == [gaps[0][1]]


def test_a_declared_index_with_the_wrong_direction_does_not_serve() -> None:
    s = shape("alerts", ("open", "=="), order_by="raised_at", desc=True)
    wrong = _infra({"collection": "alerts", "fields": [{"field": "open"}, {"field": "raised_at"}]})
    assert len(missing({s}, wrong)) == 1
    right = _infra({"collection": "alerts", "fields": [{"field": "open", "order": "DESCENDING"},
                                                       {"field": "raised_at", "order": "DESCENDING"}]})
    assert missing({s}, right) == []  # equality fields serve in either direction


def test_equality_fields_may_be_declared_in_any_order() -> None:
    s = shape("c", ("a", "=="), ("b", "=="), order_by="t")
    declared = _infra({"collection": "c", "fields": [{"field": "b"}, {"field": "a"}, {"field": "t"}]})
    assert missing({s}, declared) == []


def test_the_memory_store_and_its_transactions_record_query_shapes() -> None:
    base.QUERY_SHAPES.clear()
    store = MemoryStore()
    store.query("jobs", [Where("state", "==", "x"), Where("due", "<", 5)], order_by="due", descending=True)
    store.transaction(lambda txn: txn.query("locks", [Where("owner", "==", "a")]))
    assert base.QUERY_SHAPES == {
        QueryShape("jobs", (("due", "<"), ("state", "==")), "due", True),
        QueryShape("locks", (("owner", "=="),), None, False),
    }
    base.QUERY_SHAPES.clear()
