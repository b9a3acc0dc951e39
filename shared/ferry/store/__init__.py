"""Storage: the document-store port, its Firestore and in-memory adapters, and repositories over it."""

from ferry.store.base import DocumentStore, IoStats, Op, Transaction, Where

__all__ = ["DocumentStore", "IoStats", "Op", "Transaction", "Where"]
