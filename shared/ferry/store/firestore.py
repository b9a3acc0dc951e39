"""Firestore adapter of the DocumentStore port (native mode; the emulator when FIRESTORE_EMULATOR_HOST)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from google.api_core import exceptions as gexc

from ferry.errors import Conflict, InfraError
from ferry.store.base import MAX_BATCH, Doc, IoStats, Op, Where, record_query

T = TypeVar("T")
# get_all round trips: documents per request, requests in flight for one big get_many.
_READ_CHUNK = 500
_READERS = 4


def _data(snap: Any) -> Doc:
    """A snapshot's fields. ``to_dict()`` deep-copies them (40% of a big read's client CPU); the
    snapshot is ours alone and dropped right after, so its decoded dict is handed over as it is."""
    data = getattr(snap, "_data", None)
    return data if isinstance(data, dict) else snap.to_dict()


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except gexc.AlreadyExists as exc:
        raise Conflict(f"document already exists: {exc.message}") from exc
    except (gexc.FailedPrecondition, gexc.NotFound) as exc:  # an if_version precondition (batch writes only)
        raise Conflict(f"document changed since it was read: {exc.message}") from exc
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.Aborted) as exc:
        raise InfraError(f"Firestore unavailable: {exc.message}") from exc


class FirestoreStore:
    def __init__(self, project: str | None = None, client: Any = None, database: str | None = None) -> None:
        if client is None:
            from google.cloud import firestore

            kwargs: dict[str, Any] = {"project": project or os.environ.get("GOOGLE_CLOUD_PROJECT")}
            if database:
                kwargs["database"] = database
            if os.environ.get("FIRESTORE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                kwargs["credentials"] = AnonymousCredentials()
            client = firestore.Client(**kwargs)
        self.client = client
        self.stats = IoStats()

    def _ref(self, collection: str, id: str) -> Any:
        return self.client.collection(collection).document(id)

    def _query(self, collection: str, where: Sequence[Where], order_by: str | None, descending: bool,
               limit: int | None, start_after: str | None) -> Any:
        from google.cloud.firestore_v1 import FieldFilter
        from google.cloud.firestore_v1.field_path import FieldPath
        from google.cloud.firestore_v1.query import Query

        # both the store's and the transactions' queries come through here
        record_query(collection, where, order_by, descending)
        q: Any = self.client.collection(collection)
        for w in where:
            q = q.where(filter=FieldFilter(w.field, w.op, w.value))
        direction = Query.DESCENDING if descending else Query.ASCENDING
        inequality = any(w.op not in ("==", "in", "array_contains", "array_contains_any") for w in where)
        if order_by is None and inequality and start_after is None:
            pass  # Firestore orders by the inequality field; an explicit id order would be rejected
        elif order_by is None:
            if start_after is not None:
                op = "<" if descending else ">"
                q = q.where(filter=FieldFilter(FieldPath.document_id(), op, self._ref(collection, start_after)))
            q = q.order_by(FieldPath.document_id(), direction=direction)
        else:
            q = q.order_by(order_by, direction=direction)
        if limit is not None:
            q = q.limit(limit)
        return q

    def get(self, collection: str, id: str) -> Doc | None:
        with _translated():
            snap = self._ref(collection, id).get()
        self.stats.read(1)
        return _data(snap) if snap.exists else None

    def get_many(self, collection: str, ids: Sequence[str]) -> dict[str, Doc]:
        return {k: doc for k, (doc, _) in self.get_versioned(collection, ids).items()}

    def get_versioned(self, collection: str, ids: Sequence[str]) -> dict[str, tuple[Doc, Any]]:
        ids = list(dict.fromkeys(ids))

        def chunk(part: list[str]) -> dict[str, tuple[Doc, Any]]:
            refs = [self._ref(collection, x) for x in part]
            with _translated():
                return {s.id: (_data(s), s.update_time) for s in self.client.get_all(refs) if s.exists}

        chunks = [ids[i:i + _READ_CHUNK] for i in range(0, len(ids), _READ_CHUNK)]
        out: dict[str, tuple[Doc, Any]] = {}
        if len(chunks) <= 1:
            for part in chunks:
                out.update(chunk(part))
        else:
            # Big reads (apply of thousands of manifests) are round-trip bound: a few chunks in flight.
            with ThreadPoolExecutor(max_workers=min(_READERS, len(chunks))) as pool:
                for found in pool.map(chunk, chunks):
                    out.update(found)
        self.stats.read(len(ids))
        return out

    def query(self, collection: str, where: Sequence[Where] = (), order_by: str | None = None,
              descending: bool = False, limit: int | None = None,
              start_after: str | None = None) -> list[tuple[str, Doc]]:
        q = self._query(collection, where, order_by, descending, limit, start_after)
        with _translated():
            rows = [(s.id, _data(s)) for s in q.stream()]
        self.stats.read(max(1, len(rows)))
        return rows

    def _batch(self, ops: Sequence[Op]) -> Any:
        batch = self.client.batch()
        for op in ops:
            ref = self._ref(op.collection, op.id)
            if op.kind == "delete":
                option = None if op.if_version is None else self.client.write_option(last_update_time=op.if_version)
                batch.delete(ref, option=option)
            elif op.kind in ("create", "set") and not op.merge and _fast_write(batch, ref, op):
                continue
            elif op.kind == "create":
                batch.create(ref, op.data)
            elif op.if_version is not None:
                raise ValueError("a preconditioned set must be a plain document without merge")
            else:
                batch.set(ref, op.data, merge=op.merge)
        return batch

    def _commit(self, batch: Any, n: int) -> None:
        with _translated():
            batch.commit()
        self.stats.wrote(n)

    def write(self, ops: Iterable[Op]) -> int:
        ops = list(ops)
        chunks = [ops[i:i + MAX_BATCH] for i in range(0, len(ops), MAX_BATCH)]
        if len(chunks) <= 1:
            for part in chunks:
                self._commit(self._batch(part), len(part))
            return len(ops)
        # Encoding a batch (CPU, client side) overlaps the commit of the previous one (network); the
        # commits stay strictly in order and a failed batch stops all later ones, as sequential writes do.
        with ThreadPoolExecutor(max_workers=1) as committer:
            pending: Future[None] | None = None
            for part in chunks:
                batch = self._batch(part)
                if pending is not None:
                    pending.result()
                pending = committer.submit(self._commit, batch, len(part))
            assert pending is not None
            pending.result()
        return len(ops)

    def transaction(self, fn: Callable[[Any], T]) -> T:
        from google.cloud import firestore

        @firestore.transactional
        def run(txn: Any) -> T:
            wrapper = _FirestoreTransaction(self, txn)
            result = fn(wrapper)
            self.stats.wrote(wrapper.writes)
            return result

        with _translated():
            try:
                return run(self.client.transaction(max_attempts=10))
            except ValueError as exc:  # the library's "Failed to commit transaction in N attempts"
                if "Failed to commit transaction" not in str(exc):
                    raise
                raise InfraError(f"Firestore transaction contention: {exc}") from exc


class _FirestoreTransaction:
    def __init__(self, store: FirestoreStore, txn: Any) -> None:
        self._store = store
        self._txn = txn
        self.writes = 0

    def get(self, collection: str, id: str) -> Doc | None:
        snap = self._store._ref(collection, id).get(transaction=self._txn)
        self._store.stats.read(1)
        return _data(snap) if snap.exists else None

    def get_many(self, collection: str, ids: Sequence[str]) -> dict[str, Doc]:
        ids = list(dict.fromkeys(ids))
        refs = [self._store._ref(collection, x) for x in ids]
        self._store.stats.read(len(ids))
        return {s.id: _data(s) for s in self._store.client.get_all(refs, transaction=self._txn) if s.exists}

    def query(self, collection: str, where: Sequence[Where] = (), order_by: str | None = None,
              limit: int | None = None) -> list[tuple[str, Doc]]:
        q = self._store._query(collection, where, order_by, False, limit, None)
        rows = [(s.id, _data(s)) for s in q.stream(transaction=self._txn)]
        self._store.stats.read(max(1, len(rows)))
        return rows

    def set(self, collection: str, id: str, data: Doc, merge: bool = False) -> None:
        self._txn.set(self._store._ref(collection, id), data, merge=merge)
        self.writes += 1

    def create(self, collection: str, id: str, data: Doc) -> None:
        self._txn.create(self._store._ref(collection, id), data)
        self.writes += 1

    def delete(self, collection: str, id: str) -> None:
        self._txn.delete(self._store._ref(collection, id))
        self.writes += 1


# -- encoding ----------------------------------------------------------------------------------------
# The client library encodes documents through proto-plus wrappers, which costs more client CPU than
# the emulator spends committing (measured: 2.7 s of a 3.2 s write of 10,000 manifests). Plain
# documents (None, bool, int, float, str, bytes, datetime, lists, maps) are encoded here straight into
# the raw protobuf the library sends; anything else (sentinels, GeoPoints, references...) takes the
# library's path. The contract suite proves both write the same documents.

class _Unsupported(Exception):
    pass


def _fill(v: Any, value: Any) -> None:
    if value is None:
        v.null_value = 0
    elif value is True or value is False:
        v.boolean_value = value
    elif type(value) is int:
        v.integer_value = value
    elif type(value) is float:
        v.double_value = value
    elif type(value) is str:
        v.string_value = value
    elif isinstance(value, dict):
        fields = v.map_value.fields
        v.map_value.SetInParent()
        for key, item in value.items():
            if type(key) is not str:
                raise _Unsupported
            _fill(fields[key], item)
    elif isinstance(value, list | tuple):
        values = v.array_value.values
        v.array_value.SetInParent()
        for item in value:
            _fill(values.add(), item)
    elif isinstance(value, datetime):
        from google.api_core.datetime_helpers import DatetimeWithNanoseconds
        from google.cloud.firestore_v1._helpers import _datetime_to_pb_timestamp

        if isinstance(value, DatetimeWithNanoseconds):
            v.timestamp_value.CopyFrom(value.timestamp_pb())
        else:
            v.timestamp_value.CopyFrom(_datetime_to_pb_timestamp(value))
    elif type(value) is bytes:
        v.bytes_value = value
    else:
        raise _Unsupported


def _fast_write(batch: Any, ref: Any, op: Op) -> bool:
    """Add ``op`` (set without merge, or create) to ``batch`` as a raw Write; False to use the library."""
    from google.cloud.firestore_v1.types import write

    pb = write.Write.pb()()
    try:
        pb.update.name = ref._document_path
        fields = pb.update.fields
        for key, item in (op.data or {}).items():
            if type(key) is not str or not key:
                return False
            _fill(fields[key], item)
        if op.kind == "create":
            pb.current_document.exists = False
        elif op.if_version is not None:
            pb.current_document.update_time.CopyFrom(op.if_version.timestamp_pb())
        batch._add_write_pbs([write.Write.wrap(pb)])
    except (_Unsupported, AttributeError, TypeError, ValueError):
        return False
    return True
