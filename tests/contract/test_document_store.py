"""The DocumentStore contract: every adapter behaves the same (fake and Firestore emulator)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from ferry.errors import Conflict
from ferry.store.base import Op, Where


def test_get_missing_is_none(store):
    assert store.get("things", "nope") is None


def test_set_get_roundtrip_keeps_types(store):
    at = datetime(2026, 11, 26, 14, 5, 7, tzinfo=UTC)
    doc = {"s": "x", "i": 3, "f": 1.5, "b": True, "n": None, "l": [1, "a"], "m": {"k": {"deep": 1}}, "t": at}
    store.write([Op.set("things", "a", doc)])
    got = store.get("things", "a")
    assert got == doc
    assert got["t"].tzinfo is not None and got["t"] == at


def test_set_replaces_and_merge_merges_deeply(store):
    store.write([Op.set("things", "a", {"x": 1, "m": {"a": 1, "b": 2}})])
    store.write([Op.set("things", "a", {"m": {"b": 3}, "y": 2}, merge=True)])
    assert store.get("things", "a") == {"x": 1, "m": {"a": 1, "b": 3}, "y": 2}
    store.write([Op.set("things", "a", {"z": 1})])
    assert store.get("things", "a") == {"z": 1}


def test_create_conflicts_when_present_and_batch_is_atomic(store):
    store.write([Op.create("things", "a", {"v": 1})])
    with pytest.raises(Conflict):
        store.write([Op.set("things", "b", {"v": 2}), Op.create("things", "a", {"v": 3})])
    assert store.get("things", "a") == {"v": 1}
    assert store.get("things", "b") is None


def test_get_many_returns_only_existing(store):
    store.write([Op.set("things", str(i), {"i": i}) for i in range(5)])
    got = store.get_many("things", ["1", "3", "9", "3"])
    assert got == {"1": {"i": 1}, "3": {"i": 3}}


def test_write_more_than_one_batch(store):
    n = store.write(Op.set("many", f"d{i:04d}", {"i": i}) for i in range(1203))
    assert n == 1203
    assert len(store.query("many", limit=2000)) == 1203


def test_delete(store):
    store.write([Op.set("things", "a", {"v": 1})])
    store.write([Op.delete("things", "a"), Op.delete("things", "never-was")])
    assert store.get("things", "a") is None


def test_query_filters_order_limit(store):
    base = datetime(2026, 1, 1, tzinfo=UTC)
    store.write([Op.set("q", f"d{i}", {"due": base + timedelta(minutes=i), "team": "a" if i % 2 else "b",
                                       "tags": ["x"] if i < 3 else []}) for i in range(10)])
    due = store.query("q", [Where("due", "<=", base + timedelta(minutes=4))], order_by="due", limit=3)
    assert [i for i, _ in due] == ["d0", "d1", "d2"]
    desc = store.query("q", [Where("team", "==", "a")], order_by="due", descending=True)
    assert [i for i, _ in desc] == ["d9", "d7", "d5", "d3", "d1"]
    assert sorted(i for i, _ in store.query("q", [Where("team", "in", ["a"]), Where("tags", "array_contains", "x")])) == ["d1"]
    assert store.query("q", [Where("team", "==", "nobody")]) == []
    store.write([Op.set("q", "d10", {"tags": ["y", "z"]}), Op.set("q", "d11", {"tags": "x"})])  # not a list
    assert sorted(i for i, _ in store.query("q", [Where("tags", "array_contains_any", ["x", "z"])])) == [
        "d0", "d1", "d10", "d2"]


def test_query_pages_by_id(store):
    store.write([Op.set("p", f"n{i:02d}", {"owner": "t"}) for i in range(7)])
    first = store.query("p", [Where("owner", "==", "t")], limit=3)
    assert [i for i, _ in first] == ["n00", "n01", "n02"]
    second = store.query("p", [Where("owner", "==", "t")], limit=3, start_after=first[-1][0])
    assert [i for i, _ in second] == ["n03", "n04", "n05"]


def test_query_nested_field(store):
    store.write([Op.set("n", "a", {"state": {"phase": "late"}}), Op.set("n", "b", {"state": {"phase": "ok"}})])
    assert [i for i, _ in store.query("n", [Where("state.phase", "==", "late")])] == ["a"]


def test_transaction_reads_then_writes(store):
    store.write([Op.set("acct", "a", {"n": 1})])

    def bump(txn):
        doc = txn.get("acct", "a")
        txn.set("acct", "a", {"n": doc["n"] + 1})
        txn.create("acct", "log-1", {"from": doc["n"]})
        return doc["n"]

    assert store.transaction(bump) == 1
    assert store.get("acct", "a") == {"n": 2}
    assert store.get("acct", "log-1") == {"from": 1}


def test_transaction_create_conflict_writes_nothing(store):
    store.write([Op.set("acct", "x", {"n": 1})])

    def clash(txn):
        txn.set("acct", "y", {"n": 1})
        txn.create("acct", "x", {"n": 2})

    with pytest.raises(Conflict):
        store.transaction(clash)
    assert store.get("acct", "y") is None


def test_concurrent_transactions_do_not_lose_updates(store):
    """Every transaction that reports success is counted exactly once; contention may fail some
    (InfraError, retriable), never lose or double one."""
    from ferry.errors import InfraError

    store.write([Op.set("ctr", "c", {"n": 0})])
    done = []

    def incr(txn):
        doc = txn.get("ctr", "c")
        txn.set("ctr", "c", {"n": doc["n"] + 1})

    def worker():
        for _ in range(2):
            try:
                store.transaction(incr)
                done.append(1)
            except InfraError:
                pass

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) >= 1
    assert store.get("ctr", "c") == {"n": len(done)}


def test_stats_count_reads_and_writes(store):
    before = store.stats.snapshot()
    store.write([Op.set("s", str(i), {"i": i}) for i in range(4)])
    store.get("s", "0")
    store.get_many("s", ["1", "2", "zz"])
    store.query("s", [Where("i", ">=", 2)])
    store.query("s", [Where("i", ">=", 100)])
    assert store.stats.since(before) == {"writes": 4, "reads": 1 + 3 + 2 + 1}


def test_versioned_writes_fail_when_the_document_changed(store):
    store.write([Op.set("c", "a", {"n": 1}), Op.set("c", "b", {"n": 1})])
    read = store.get_versioned("c", ["a", "b", "missing"])
    assert set(read) == {"a", "b"} and read["a"][0] == {"n": 1}
    store.write([Op.set("c", "a", {"n": 2}, if_version=read["a"][1])])  # unchanged since read: applies
    with pytest.raises(Conflict):  # "a" changed since read: the whole batch is refused
        store.write([Op.set("c", "b", {"n": 3}, if_version=read["b"][1]),
                     Op.set("c", "a", {"n": 3}, if_version=read["a"][1])])
    assert store.get("c", "a") == {"n": 2} and store.get("c", "b") == {"n": 1}
    with pytest.raises(Conflict):
        store.write([Op.delete("c", "a", if_version=read["a"][1])])
    store.write([Op.delete("c", "a", if_version=store.get_versioned("c", ["a"])["a"][1])])
    assert store.get("c", "a") is None
    with pytest.raises(Conflict):  # a deleted document is not the version read either
        store.write([Op.set("c", "a", {"n": 4}, if_version=read["a"][1])])
