"""Apply over every DocumentStore adapter (in-memory fake and the Firestore emulator)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ferry.domain import loading
from ferry.domain.manifests import Endpoint
from ferry.services.apply import ApplyService
from ferry.services.authz import Authorizer
from ferry.store.manifests import ManifestRepository

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"
NOW = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
PIA = "pia@example.com"  # a member of team-playback in the examples


def service(store) -> ApplyService:
    # The core service alone: subsystems' hooks have their own contract tests.
    repo = ManifestRepository(store)
    return ApplyService(repo, Authorizer(repo))


def endpoint(name: str, owner: str, partitioning: str = "hourly") -> Endpoint:
    return Endpoint.model_validate({"kind": "Endpoint", "metadata": {"name": name, "owner": owner},
                                    "spec": {"partitioning": partitioning, "timezone": "Europe/Stockholm"}})


def test_apply_reapply_dry_run_change(store):
    apply = service(store)
    manifests = loading.load([EXAMPLES])
    n = len(manifests)

    first = apply.apply(manifests, NOW)
    assert first.counts() == {"created": n, "changed": 0, "unchanged": 0}
    assert store.stats.writes == n

    before = store.stats.snapshot()
    again = apply.apply(loading.load([EXAMPLES]), NOW + timedelta(minutes=1))
    assert again.counts() == {"created": 0, "changed": 0, "unchanged": n}
    assert store.stats.since(before)["writes"] == 0

    changed = [m if m.name != "plays-5m" else endpoint("plays-5m", "team-playback", "PT15M") for m in manifests]
    before = store.stats.snapshot()
    dry = apply.apply(changed, NOW, actor=PIA, dry_run=True)
    assert dry.counts() == {"created": 0, "changed": 1, "unchanged": n - 1}
    assert store.stats.since(before)["writes"] == 0
    assert apply.repo.get("Endpoint", "plays-5m").model().spec.partitioning == "PT5M"

    later = NOW + timedelta(days=1)
    result = apply.apply(changed, later, actor=PIA)
    assert [c.to_dict() for c in result.changes if c.action != "unchanged"] == [
        {"kind": "Endpoint", "name": "plays-5m", "action": "changed", "generation": 2}]
    rec = apply.repo.get("Endpoint", "plays-5m")
    assert rec.generation == 2 and rec.created_at == NOW and rec.updated_at == later
    assert rec.model().spec.partitioning == "PT15M"
    assert store.stats.since(before)["writes"] == 1


def test_stored_records_round_trip(store):
    apply = service(store)
    apply.apply(loading.load([EXAMPLES]), NOW)
    rec = apply.repo.get("EventType", "play")
    assert rec.owner == "team-playback" and rec.generation == 1
    assert rec.model() == next(m for m in loading.load([EXAMPLES]) if m.name == "play")
    daily = apply.repo.get("Endpoint", "royalties-daily").model()
    assert daily.spec.start == datetime(2026, 10, 31, 23, tzinfo=UTC)


def test_listing_pages_by_owner(store):
    apply = service(store)
    apply.apply([endpoint(f"e{i:03d}", "team-a" if i % 3 else "team-b") for i in range(40)], NOW)
    seen, token, pages = [], None, 0
    while True:
        page, token = apply.repo.list("Endpoint", owner="team-a", limit=7, after=token)
        seen += [r.name for r in page]
        pages += 1
        if token is None:
            break
    assert seen == [f"e{i:03d}" for i in range(40) if i % 3]
    assert pages == 4  # 26 objects: 7 + 7 + 7 + 5
    assert [r.name for r in apply.repo.all("Endpoint", owner="team-b")] == [f"e{i:03d}" for i in range(0, 40, 3)]
    assert len(apply.repo.all("Endpoint")) == 40


def test_delete(store):
    apply = service(store)
    apply.apply([endpoint("a", "t"), endpoint("b", "t")], NOW)
    apply.delete("Endpoint", "a", NOW)
    assert apply.repo.get("Endpoint", "a") is None
    assert [r.name for r in apply.repo.all("Endpoint")] == ["b"]
