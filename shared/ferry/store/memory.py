"""In-memory DocumentStore: a hand-written fake for fast unit tests (passes the same contract suite)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from ferry.errors import Conflict
from ferry.store.base import MAX_BATCH, Doc, IoStats, Op, Where, record_query

T = TypeVar("T")
_MISSING = object()


def _get_path(doc: Doc, path: str) -> Any:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _matches(doc: Doc, w: Where) -> bool:
    v = _get_path(doc, w.field)
    if v is _MISSING:
        return False
    try:
        match w.op:
            case "==":
                return bool(v == w.value)
            case "!=":
                return bool(v != w.value)
            case "<":
                return bool(v < w.value)
            case "<=":
                return bool(v <= w.value)
            case ">":
                return bool(v > w.value)
            case ">=":
                return bool(v >= w.value)
            case "in":
                return v in w.value
            case "array_contains":
                return isinstance(v, list) and w.value in v
            case "array_contains_any":
                return isinstance(v, list) and any(x in v for x in w.value)
    except TypeError:
        return False
    raise ValueError(f"unsupported operator {w.op}")


def _deep_merge(base: Doc, patch: Doc) -> Doc:
    out = dict(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class MemoryStore:
    def __init__(self) -> None:
        self.stats = IoStats()
        self._data: dict[str, dict[str, Doc]] = {}
        # a document's version: a store-wide counter at its last write (Firestore: update time)
        self._versions: dict[tuple[str, str], int] = {}
        self._clock = 0
        self._lock = threading.RLock()

    # -- reads ---------------------------------------------------------------------------------
    def get(self, collection: str, id: str) -> Doc | None:
        with self._lock:
            self.stats.read(1)
            doc = self._data.get(collection, {}).get(id)
            return copy.deepcopy(doc)

    def get_many(self, collection: str, ids: Sequence[str]) -> dict[str, Doc]:
        with self._lock:
            ids = list(dict.fromkeys(ids))
            self.stats.read(len(ids))
            col = self._data.get(collection, {})
            return {i: copy.deepcopy(col[i]) for i in ids if i in col}

    def get_versioned(self, collection: str, ids: Sequence[str]) -> dict[str, tuple[Doc, Any]]:
        with self._lock:
            return {i: (d, self._versions[(collection, i)]) for i, d in self.get_many(collection, ids).items()}

    def query(self, collection: str, where: Sequence[Where] = (), order_by: str | None = None,
              descending: bool = False, limit: int | None = None,
              start_after: str | None = None) -> list[tuple[str, Doc]]:
        record_query(collection, where, order_by, descending)
        with self._lock:
            rows = [(i, d) for i, d in self._data.get(collection, {}).items() if all(_matches(d, w) for w in where)]
            if order_by is None:
                rows.sort(key=lambda r: r[0], reverse=descending)
                if start_after is not None:
                    rows = [r for r in rows if (r[0] < start_after if descending else r[0] > start_after)]
            else:
                rows = [r for r in rows if _get_path(r[1], order_by) is not _MISSING]
                rows.sort(key=lambda r: (_get_path(r[1], order_by), r[0]), reverse=descending)
            if limit is not None:
                rows = rows[:limit]
            self.stats.read(max(1, len(rows)))
            return [(i, copy.deepcopy(d)) for i, d in rows]

    # -- writes --------------------------------------------------------------------------------
    def _apply(self, ops: list[Op]) -> None:
        for op in ops:
            if op.kind == "set" and op.merge and op.if_version is not None:  # as the Firestore adapter refuses
                raise ValueError("a preconditioned set must be a plain document without merge")
            if op.kind == "create" and op.id in self._data.get(op.collection, {}):
                raise Conflict(f"{op.collection}/{op.id} already exists")
            if op.if_version is not None and self._versions.get((op.collection, op.id)) != op.if_version:
                raise Conflict(f"{op.collection}/{op.id} changed since it was read")
        self._clock += 1
        for op in ops:
            col = self._data.setdefault(op.collection, {})
            if op.kind == "delete":
                col.pop(op.id, None)
                self._versions.pop((op.collection, op.id), None)
                continue
            self._versions[(op.collection, op.id)] = self._clock
            if op.merge and op.id in col:
                col[op.id] = _deep_merge(col[op.id], copy.deepcopy(op.data or {}))
            else:
                col[op.id] = copy.deepcopy(op.data or {})
        self.stats.wrote(len(ops))

    def write(self, ops: Iterable[Op]) -> int:
        ops = list(ops)
        with self._lock:
            for i in range(0, len(ops), MAX_BATCH):
                self._apply(ops[i:i + MAX_BATCH])
        return len(ops)

    def transaction(self, fn: Callable[[Any], T]) -> T:
        # Holding the lock for the whole function makes every transaction serializable.
        with self._lock:
            txn = _MemoryTransaction(self)
            result = fn(txn)
            self._apply(txn.ops)
            return result

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._versions.clear()


class _MemoryTransaction:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.ops: list[Op] = []

    def get(self, collection: str, id: str) -> Doc | None:
        return self._store.get(collection, id)

    def get_many(self, collection: str, ids: Sequence[str]) -> dict[str, Doc]:
        return self._store.get_many(collection, ids)

    def query(self, collection: str, where: Sequence[Where] = (), order_by: str | None = None,
              limit: int | None = None) -> list[tuple[str, Doc]]:
        return self._store.query(collection, where, order_by=order_by, limit=limit)

    def set(self, collection: str, id: str, data: Doc, merge: bool = False) -> None:
        self.ops.append(Op.set(collection, id, data, merge))

    def create(self, collection: str, id: str, data: Doc) -> None:
        self.ops.append(Op.create(collection, id, data))

    def delete(self, collection: str, id: str) -> None:
        self.ops.append(Op.delete(collection, id))
