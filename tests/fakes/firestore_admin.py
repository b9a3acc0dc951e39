"""A fake Firestore admin client: the database (get_database / create_database: a new project has none,
NotFound until created) and its indexes (list_indexes / create_index), as the library calls them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore_admin_v1
from google.cloud.firestore_admin_v1.types.database import Database


@dataclass
class FakeFirestoreAdmin:
    indexes: dict[str, list[firestore_admin_v1.Index]] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    databases: dict[str, Database] = field(default_factory=dict)

    def get_database(self, request: dict[str, Any]) -> Database:
        if request["name"] not in self.databases:
            raise gexc.NotFound(f"Project or database does not exist: {request['name']}")
        return self.databases[request["name"]]

    def create_database(self, request: dict[str, Any]) -> Any:
        name = f"{request['parent']}/databases/{request['database_id']}"
        if name in self.databases:
            raise gexc.AlreadyExists(f"Database {name} already exists")
        db = Database(request["database"])
        db.name = name
        self.databases[name] = db
        self.created.append(name)

        class Operation:
            def result(self, timeout: float | None = None) -> Database:
                return db
        return Operation()

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
