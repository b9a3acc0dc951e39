"""FirestoreStore's own document encoding writes exactly what the client library would (offline)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from ferry.store.base import Op
from ferry.store.firestore import FirestoreStore, _fast_write

DOCS = [
    {},
    {"s": "x", "i": 3, "neg": -(2**62), "f": 1.5, "b": True, "f0": False, "n": None, "by": b"\x00\xff"},
    {"l": [1, "a", None, [2, [3]], {"k": []}], "empty_list": [], "empty_map": {}, "t": (1, 2)},
    {"m": {"k": {"deep": {"deeper": [{"x": 1}]}}}, "dotted.key": 1, "ünï": "códe"},
    {"t": datetime(2026, 11, 26, 14, 5, 7, 123456, tzinfo=UTC),
     "cet": datetime(2026, 3, 29, 1, 59, tzinfo=timezone(timedelta(hours=1))),
     "ns": DatetimeWithNanoseconds(2026, 1, 1, 0, 0, 0, nanosecond=123456789, tzinfo=UTC)},
]


@pytest.fixture
def store() -> FirestoreStore:
    return FirestoreStore(client=firestore.Client(project="p", credentials=AnonymousCredentials()))


def library_batch(store: FirestoreStore, op: Op):
    batch = store.client.batch()
    ref = store._ref(op.collection, op.id)
    (batch.create if op.kind == "create" else batch.set)(ref, op.data)
    return batch


@pytest.mark.parametrize("doc", DOCS)
@pytest.mark.parametrize("kind", ["set", "create"])
def test_same_writes_as_the_library(store, doc, kind):
    op = Op(kind, "things", "a", doc)
    assert _fast_write(store.client.batch(), store._ref("things", "a"), op)  # not the library's path
    ours = store._batch([op])._write_pbs
    theirs = library_batch(store, op)._write_pbs
    assert [w._pb for w in ours] == [w._pb for w in theirs]


def test_what_it_does_not_know_goes_through_the_library(store):
    for data in ({"at": firestore.SERVER_TIMESTAMP}, {"s": {1, 2}}, {"k": {1: "int key"}}):
        op = Op.set("things", "a", data)
        try:
            expected = [w._pb for w in library_batch(store, op)._write_pbs]
        except (TypeError, ValueError) as exc:
            with pytest.raises(type(exc)):
                store._batch([op])
            continue
        assert [w._pb for w in store._batch([op])._write_pbs] == expected


def test_merge_and_delete_use_the_library(store):
    ops = [Op.set("things", "a", {"m": {"x": 1}}, merge=True), Op.delete("things", "b")]
    ours = [w._pb for w in store._batch(ops)._write_pbs]
    batch = store.client.batch()
    batch.set(store._ref("things", "a"), {"m": {"x": 1}}, merge=True)
    batch.delete(store._ref("things", "b"))
    assert ours == [w._pb for w in batch._write_pbs]
