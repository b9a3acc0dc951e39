"""Manifests as stored: one collection per kind (``endpoints``, ``workflows``...), one doc per name."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from ferry.domain.manifests import KINDS, PLURALS, Endpoint, EventType, Manifest, Resource, Team, Workflow
from ferry.store.base import Doc, DocumentStore, Op, Where

M = TypeVar("M", Endpoint, Workflow, EventType, Resource, Team)


@dataclass(frozen=True)
class ManifestRecord:
    """A manifest as applied, with its bookkeeping."""

    kind: str
    name: str
    owner: str | None
    fingerprint: str
    generation: int
    manifest: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    def model(self) -> Manifest:
        return KINDS[self.kind].model_validate(self.manifest)  # type: ignore[return-value]

    def model_as(self, cls: type[M]) -> M:
        """The manifest as ``cls`` (the model of this record's kind; ValueError if it is another)."""
        if KINDS[self.kind] is not cls:
            raise ValueError(f"{self.kind} {self.name} is not a {cls.__name__}")
        return cls.model_validate(self.manifest)

    def to_api(self) -> dict[str, Any]:
        out = dict(self.manifest)
        out["status"] = {"generation": self.generation, "created_at": self.created_at.isoformat(),
                         "updated_at": self.updated_at.isoformat()}
        return out

    @classmethod
    def from_doc(cls, doc: Doc) -> ManifestRecord:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})  # type: ignore[arg-type]


def collection(kind: str) -> str:
    return PLURALS[kind]


class ManifestRepository:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    def get(self, kind: str, name: str) -> ManifestRecord | None:
        doc = self.store.get(collection(kind), name)
        return ManifestRecord.from_doc(doc) if doc else None

    def get_many(self, kind: str, names: Sequence[str]) -> dict[str, ManifestRecord]:
        return {n: ManifestRecord.from_doc(d) for n, d in self.store.get_many(collection(kind), names).items()}

    def get_versioned(self, kind: str, names: Sequence[str]) -> dict[str, tuple[ManifestRecord, Any]]:
        """Records with the store version they were read at (the precondition of ``op_for``)."""
        return {n: (ManifestRecord.from_doc(d), v)
                for n, (d, v) in self.store.get_versioned(collection(kind), names).items()}

    def did_you_mean(self, kind: str, name: str, scan: int = 2000) -> str:
        """`` — did you mean X?`` for the stored ``kind`` name closest to a ``name`` that was not found
        (among the first ``scan`` names), or ``""``."""
        import difflib

        names: list[str] = []
        after = None
        while len(names) < scan:
            page, after = self.list(kind, limit=500, after=after)
            names += [r.name for r in page]
            if after is None:
                break
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
        return f" — did you mean {close[0]}?" if close else ""

    def list(self, kind: str, owner: str | None = None, limit: int = 100,
             after: str | None = None) -> tuple[list[ManifestRecord], str | None]:
        """One page ordered by name; returns the page and the cursor of the next one (or None)."""
        where = [Where("owner", "==", owner)] if owner else []
        rows = self.store.query(collection(kind), where, limit=limit + 1, start_after=after)
        page = [ManifestRecord.from_doc(d) for _, d in rows[:limit]]
        return page, (page[-1].name if len(rows) > limit else None)

    def changed_since(self, kind: str, since: datetime) -> builtins.list[ManifestRecord]:
        """Manifests of ``kind`` written at or after ``since`` (one query on ``updated_at``)."""
        return [ManifestRecord.from_doc(d) for _, d in self.store.query(collection(kind),
                                                                         [Where("updated_at", ">=", since)])]

    # (``builtins.list``: inside this class ``list`` names the method above)
    def all(self, kind: str, owner: str | None = None) -> builtins.list[ManifestRecord]:
        out: builtins.list[ManifestRecord] = []
        after = None
        while True:
            page, after = self.list(kind, owner, limit=1000, after=after)
            out.extend(page)
            if after is None:
                return out

    @staticmethod
    def record_for(manifest: Manifest, previous: ManifestRecord | None, now: datetime) -> ManifestRecord:
        return ManifestRecord(
            kind=manifest.kind, name=manifest.name, owner=manifest.metadata.owner,
            fingerprint=manifest.fingerprint(),
            generation=(previous.generation + 1) if previous else 1,
            manifest=manifest.to_doc(),
            created_at=previous.created_at if previous else now, updated_at=now,
        )

    @staticmethod
    def op_for(record: ManifestRecord, read_version: Any = None) -> Op:
        """The write of ``record``: a create when it is new (generation 1), else a set conditional
        on the version it was read at, so a concurrent writer's change is never overwritten."""
        if record.generation == 1:
            return Op.create(collection(record.kind), record.name, dict(record.__dict__))
        return Op.set(collection(record.kind), record.name, dict(record.__dict__), if_version=read_version)
