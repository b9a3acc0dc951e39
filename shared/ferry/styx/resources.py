"""Resource pools with their usage: the manifest (as ``ferry get`` shows any kind) plus ``usage``:
declared concurrency, slots taken now and by which instances."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ferry.errors import NotFound
from ferry.store.base import DocumentStore, Where
from ferry.store.manifests import ManifestRecord, ManifestRepository
from ferry.styx.repository import SLOTS

PREFIX = "resource."


def _holders(store: DocumentStore, name: str | None = None) -> dict[str, list[str]]:
    """Instances holding a slot, per resource: one query (reads grow with the slots taken)."""
    if name is not None:
        where = [Where("pool", "==", PREFIX + name)]
    else:  # every pool named resource.*
        where = [Where("pool", ">=", PREFIX), Where("pool", "<", PREFIX[:-1] + chr(ord(".") + 1))]
    out: dict[str, list[str]] = defaultdict(list)
    for _, d in store.query(SLOTS, where):
        out[d["pool"][len(PREFIX):]].append(d["instance"])
    return out


def view(rec: ManifestRecord, holders: list[str]) -> dict[str, Any]:
    item = rec.to_api()
    item["usage"] = {"in_use": len(holders), "concurrency": rec.manifest["spec"]["concurrency"],
                     "holders": sorted(holders)}
    return item


def listing(store: DocumentStore, owner: str | None = None) -> list[dict[str, Any]]:
    held = _holders(store)
    return [view(rec, held.get(rec.name, [])) for rec in ManifestRepository(store).all("Resource", owner)]


def one(store: DocumentStore, name: str) -> dict[str, Any]:
    rec = ManifestRepository(store).get("Resource", name)
    if rec is None:
        raise NotFound(f"Resource {name!r} not found")
    return view(rec, _holders(store, name).get(name, []))
