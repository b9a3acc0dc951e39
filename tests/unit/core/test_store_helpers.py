"""write_all_or_each: one batch when nobody races; after a lost race, each item alone (or re-planned)."""

from __future__ import annotations

from ferry.store.base import Op, write_all_or_each
from ferry.store.memory import MemoryStore


def claims(*ids: str) -> list[str]:
    return list(ids)


def test_one_batch_when_nobody_races() -> None:
    store = MemoryStore()
    out = write_all_or_each(store, claims("a", "b", "c"), lambda i: [Op.create("c", i, {"v": i})])
    assert out.items == ["a", "b", "c"] and out.alone == [] and out.conflicts == 0
    assert set(dict(store.query("c"))) == {"a", "b", "c"}


def test_after_a_lost_race_each_item_is_written_alone() -> None:
    store = MemoryStore()
    store.write([Op.create("c", "b", {"v": "theirs"})])  # another writer won b
    out = write_all_or_each(store, claims("a", "b", "c"), lambda i: [Op.create("c", i, {"v": i})])
    assert out.items == ["a", "c"] and out.alone == ["a", "c"]
    assert out.conflicts == 2  # the batch, then b alone
    assert store.get("c", "b") == {"v": "theirs"}


def test_batches_fit_the_limit_and_an_items_ops_stay_together() -> None:
    store = MemoryStore()
    store.write([Op.create("c", "y1", {})])
    items = ["x", "y", "z"]
    out = write_all_or_each(store, items, lambda i: [Op.create("c", f"{i}0", {}), Op.create("c", f"{i}1", {})],
                            batch_ops=3)
    # batches [x], [y], [z]: only y's loses, and it is not retried as the same commit
    assert out.items == ["x", "z"] and out.conflicts == 1
    assert store.get("c", "y0") is None


def test_one_settles_each_item_after_a_lost_race() -> None:
    store = MemoryStore()
    store.write([Op.create("c", "b", {})])
    looked: list[str] = []

    def again(i: str) -> bool:
        looked.append(i)
        return i != "b"

    out = write_all_or_each(store, claims("a", "b"), lambda i: [Op.create("c", i, {})], again)
    assert looked == ["a", "b"] and out.items == ["a"] and out.alone == ["a"] and out.conflicts == 1
