"""A fake Firestore admin client (indexes only): list_indexes / create_index, as the library calls them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore_admin_v1


@dataclass
class FakeFirestoreAdmin:
    indexes: dict[str, list[firestore_admin_v1.Index]] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    def list_indexes(self, request: dict[str, Any]) -> list[firestore_admin_v1.Index]:
        return list(self.indexes.get(request["parent"], []))

    def create_index(self, request: dict[str, Any]) -> Any:
        index = firestore_admin_v1.Index(request["index"])
        existing = self.indexes.setdefault(request["parent"], [])
        index.name = f"{request['parent']}/indexes/ix{len(existing)}"
        # Firestore appends the document-id field to every composite index it stores
        last = index.fields[-1]
        index.fields.append(firestore_admin_v1.Index.IndexField(
            field_path="__name__", order=last.order or firestore_admin_v1.Index.IndexField.Order.ASCENDING))
        existing.append(index)
        self.created.append(index.name)
        return object()  # the long-running operation; deploy does not wait on it
