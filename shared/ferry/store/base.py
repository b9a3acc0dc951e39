"""The document-store port: the narrow slice of Firestore that Ferry uses.

Every subsystem's state lives in documents of collections; repositories of each subsystem speak this
port, and the same contract suite (tests/contract) proves the Firestore adapter against the emulator
and the in-memory fake used by unit tests. Reads and writes are counted in ``stats`` because on
Firestore they are the bill.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")
Doc = dict[str, Any]
Operator = Literal["==", "!=", "<", "<=", ">", ">=", "in", "array_contains", "array_contains_any"]
# Firestore's limit on the values of one ``in`` / ``array_contains_any`` filter.
MAX_IN = 30
# Firestore's limit for one batched write or transaction commit.
MAX_BATCH = 500


@dataclass(frozen=True)
class Where:
    field: str
    op: Operator
    value: Any


@dataclass(frozen=True)
class Op:
    """One write: ``set`` (replace, or merge when ``merge``), ``create`` (fails if present), ``delete``.

    ``if_version`` (a version from ``get_versioned``) makes a set or delete conditional: its batch
    fails with Conflict if the document changed (or vanished) since that read.
    """

    kind: Literal["set", "create", "delete"]
    collection: str
    id: str
    data: Doc | None = None
    merge: bool = False
    if_version: Any = None

    @classmethod
    def set(cls, collection: str, id: str, data: Doc, merge: bool = False, if_version: Any = None) -> Op:
        return cls("set", collection, id, data, merge, if_version)

    @classmethod
    def create(cls, collection: str, id: str, data: Doc) -> Op:
        return cls("create", collection, id, data)

    @classmethod
    def delete(cls, collection: str, id: str, if_version: Any = None) -> Op:
        return cls("delete", collection, id, if_version=if_version)


@dataclass
class IoStats:
    """Document reads and writes, as Firestore bills them (a query that finds nothing is one read)."""

    reads: int = 0
    writes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def read(self, n: int) -> None:
        with self._lock:
            self.reads += n

    def wrote(self, n: int) -> None:
        with self._lock:
            self.writes += n

    def snapshot(self) -> dict[str, int]:
        return {"reads": self.reads, "writes": self.writes}

    def since(self, before: dict[str, int]) -> dict[str, int]:
        return {"reads": self.reads - before["reads"], "writes": self.writes - before["writes"]}


@dataclass(frozen=True, order=True)
class QueryShape:
    """What a query asks of Firestore's indexes: filtered fields and operators, and its ordering."""

    collection: str
    filters: tuple[tuple[str, str], ...]
    order_by: str | None = None
    descending: bool = False


# Every query shape this process made (the test suite checks each against infra/'s indexes, because
# the Firestore emulator does not enforce indexes and production does). Set FERRY_QUERY_SHAPES_FILE
# to also append new shapes as JSON lines (subprocesses such as functions-framework report there).
QUERY_SHAPES: set[QueryShape] = set()
_SHAPES_LOCK = threading.Lock()


def record_query(collection: str, where: Sequence[Where], order_by: str | None, descending: bool = False) -> None:
    shape = QueryShape(collection, tuple(sorted({(w.field, w.op) for w in where})), order_by, descending)
    with _SHAPES_LOCK:
        if shape in QUERY_SHAPES:
            return
        QUERY_SHAPES.add(shape)
    path = os.environ.get("FERRY_QUERY_SHAPES_FILE")
    if path:
        line = json.dumps({"pid": os.getpid(), "collection": collection, "filters": shape.filters,
                           "order_by": order_by, "descending": descending})
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class Transaction(Protocol):
    """Reads first, then writes; all-or-nothing; retried from the start on contention."""

    def get(self, collection: str, id: str) -> Doc | None: ...

    def get_many(self, collection: str, ids: Sequence[str]) -> dict[str, Doc]: ...

    def query(self, collection: str, where: Sequence[Where] = (), order_by: str | None = None,
              limit: int | None = None) -> list[tuple[str, Doc]]: ...

    def set(self, collection: str, id: str, data: Doc, merge: bool = False) -> None: ...

    def create(self, collection: str, id: str, data: Doc) -> None:
        """Write ``data`` only if the document does not exist (else Conflict at commit)."""
        ...

    def delete(self, collection: str, id: str) -> None: ...


class DocumentStore(Protocol):
    stats: IoStats

    def get(self, collection: str, id: str) -> Doc | None:
        """One document, or None."""
        ...

    def get_many(self, collection: str, ids: Sequence[str]) -> dict[str, Doc]:
        """The documents that exist among ``ids``, by id (one batched read)."""
        ...

    def get_versioned(self, collection: str, ids: Sequence[str]) -> dict[str, tuple[Doc, Any]]:
        """Like ``get_many``, each document with its version (Firestore: its update time), the
        precondition a later ``Op.set``/``Op.delete`` may carry as ``if_version``."""
        ...

    def query(self, collection: str, where: Sequence[Where] = (), order_by: str | None = None,
              descending: bool = False, limit: int | None = None,
              start_after: str | None = None) -> list[tuple[str, Doc]]:
        """Documents matching every filter. ``order_by`` None orders by id; ``start_after`` is
        an id cursor and requires ordering by id."""
        ...

    def write(self, ops: Iterable[Op]) -> int:
        """Apply writes in batches of at most 500 (each batch atomic, not the whole). Returns count.

        Raises:
            Conflict: a ``create`` found its document present, or an ``if_version`` precondition
                failed (that batch is not applied; earlier batches are).
        """
        ...

    def transaction(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn`` in a read-write transaction; it may be called more than once."""
        ...


@dataclass
class Committed:
    """What ``write_all_or_each`` committed: the items, those of them settled one at a time after their
    batch lost a race, and how many commits lost."""

    items: list[Any]
    alone: list[Any] = field(default_factory=list)
    conflicts: int = 0


def write_all_or_each(store: DocumentStore, items: Sequence[T], ops_of: Callable[[T], Sequence[Op]],
                      one: Callable[[T], bool] | None = None, batch_ops: int = MAX_BATCH) -> Committed:
    """Commit ``items`` in as few atomic batches as fit ``batch_ops`` ops; when a batch loses a race
    (Conflict: one of its ``create``s found its document), settle that batch's items one at a time —
    each item's ops alone, or ``one(item)`` (which may look again first; True when it committed).

    An item's ops are never split across batches.
    """
    from ferry.errors import Conflict

    out = Committed([])
    chunks: list[list[tuple[T, Sequence[Op]]]] = []
    size = 0
    for item in items:
        ops = ops_of(item)
        if not chunks or size + len(ops) > batch_ops:
            chunks.append([])
            size = 0
        chunks[-1].append((item, ops))
        size += len(ops)

    def alone(item: T, ops: Sequence[Op]) -> bool:
        if one is not None:
            return one(item)
        try:
            store.write(ops)
            return True
        except Conflict:
            out.conflicts += 1
            return False

    for chunk in chunks:
        try:
            store.write([op for _, ops in chunk for op in ops])
            out.items.extend(item for item, _ in chunk)
            continue
        except Conflict:
            out.conflicts += 1
        if len(chunk) == 1 and one is None:
            continue  # the same commit again would lose the same way
        settled = [item for item, ops in chunk if alone(item, ops)]
        out.items.extend(settled)
        out.alone.extend(settled)
    return out
