"""Resource pools with their usage: declared concurrency and the slots taken now."""

from __future__ import annotations

from typing import Any

from ferry.styx.repository import StyxRepository
from ferry.wiring import Services


def usage(services: Services) -> list[dict[str, Any]]:
    repo = StyxRepository(services.store)
    out = []
    for rec in services.manifests.all("Resource"):
        used = repo.used_slots(f"resource.{rec.name}")
        out.append({"name": rec.name, "owner": rec.owner, "concurrency": rec.manifest["spec"]["concurrency"],
                    "used": len(used), "holders": sorted(d["instance"] for d in used.values())})
    return out
