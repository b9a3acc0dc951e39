"""Apply over every DocumentStore adapter (in-memory fake and the Firestore emulator)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ferry.domain import loading
from ferry.domain.manifests import Endpoint
from ferry.errors import Conflict
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


def endpoint(name: str, owner: str, partitioning: str = "hourly", timezone: str = "Europe/Stockholm") -> Endpoint:
    return Endpoint.model_validate({"kind": "Endpoint", "metadata": {"name": name, "owner": owner},
                                    "spec": {"partitioning": partitioning, "timezone": timezone}})


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
    assert daily == next(m for m in loading.load([EXAMPLES]) if m.name == "royalties-daily")
    # an aware start survives the store (Firestore hands back its own datetime type); the examples start
    # when applied, so this one is made here
    started = Endpoint.model_validate({"kind": "Endpoint", "metadata": {"name": "started", "owner": "team-a"},
                                       "spec": {"partitioning": "daily", "timezone": "Europe/Stockholm",
                                                "start": "2026-10-31T23:00:00Z"}})
    apply.apply([started], NOW)
    assert apply.repo.get("Endpoint", "started").model().spec.start == datetime(2026, 10, 31, 23, tzinfo=UTC)


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


class _ReadThenWait:
    """The store, but every write first waits until all racing applies have read (a barrier)."""

    def __init__(self, store, barrier: threading.Barrier) -> None:
        self._store = store
        self._barrier = barrier

    def __getattr__(self, name):
        return getattr(self._store, name)

    def write(self, ops):
        self._barrier.wait(timeout=60)
        return self._store.write(ops)


def _race(store, sets: list[list[Endpoint]], barrier: threading.Barrier | None = None) -> list[object]:
    """Apply each set from its own thread at once; each outcome is an ApplyResult or the error."""
    racer = _ReadThenWait(store, barrier) if barrier else store
    with ThreadPoolExecutor(max_workers=len(sets)) as pool:
        futures = [pool.submit(service(racer).apply, s, NOW) for s in sets]
        return [f.exception() or f.result() for f in futures]


SPEEDS = ["hourly", "daily", "PT5M", "PT15M"]
ZONES = ["UTC", "Europe/Stockholm", "America/New_York", "Asia/Tokyo"]


def _conflicting_sets(round_: int) -> list[list[Endpoint]]:
    # apply i writes "shared" and its two neighbours' objects at its own partitioning, in this
    # round's timezone: every version differs from every earlier round's
    return [[endpoint(n, "t", SPEEDS[i], ZONES[round_ % 4]) for n in ("shared", f"x{i}", f"x{(i + 1) % 4}")]
            for i in range(4)]


def test_concurrent_conflicting_applies_lose_nothing(store):
    """4 applies read the same versions, then write at once: one wins, the others get 409 naming
    the objects that changed under them, and every object holds exactly one apply's version."""
    apply = service(store)
    apply.apply([endpoint(n, "t", "PT1M") for n in ("shared", "x0", "x1", "x2", "x3")], NOW)
    for round_ in range(3):
        sets = _conflicting_sets(round_)
        outcomes = _race(store, sets, threading.Barrier(4))
        won = [i for i, o in enumerate(outcomes) if not isinstance(o, BaseException)]
        assert len(won) == 1, outcomes  # all four read the same versions of "shared"
        for i, o in enumerate(outcomes):
            if i in won:
                continue
            assert isinstance(o, Conflict), o
            assert o.http_status == 409
            changed = {c["name"] for c in o.details["changed"]}
            assert "shared" in changed and changed <= {m.name for m in sets[i]}
            assert "shared" in o.message
        stored = {r.name: r for r in apply.repo.all("Endpoint")}
        winner = sets[won[0]]
        for m in winner:  # the winner's version, all of it
            assert stored[m.name].fingerprint == m.fingerprint()
        assert stored["shared"].generation == round_ + 2  # one write per round, none lost


def test_free_running_applies_count_every_write(store):
    """Without a barrier: whatever interleaving, a successful change is +1 generation and a lost
    race is a 409; the final generation counts every successful write (no lost update)."""
    apply = service(store)
    apply.apply([endpoint(n, "t", "PT1M") for n in ("shared", "x0", "x1", "x2", "x3")], NOW)
    writes = {n: 0 for n in ("shared", "x0", "x1", "x2", "x3")}
    for round_ in range(4):
        for o in _race(store, _conflicting_sets(round_)):
            if isinstance(o, BaseException):
                assert isinstance(o, Conflict), o
                continue
            for c in o.changes:
                writes[c.manifest.name] += c.action == "changed"
    stored = {r.name: r for r in apply.repo.all("Endpoint")}
    assert {n: r.generation - 1 for n, r in stored.items()} == writes
    assert writes["shared"] >= 4  # the first commit of a round always wins, and changes "shared"


def test_delete_after_a_concurrent_change_is_refused(store):
    apply = service(store)
    apply.apply([endpoint("a", "t")], NOW)
    barrier = threading.Barrier(2)
    racer = service(_ReadThenWait(store, barrier))
    with ThreadPoolExecutor(max_workers=2) as pool:
        deleting = pool.submit(racer.delete, "Endpoint", "a", NOW)
        changing = pool.submit(racer.apply, [endpoint("a", "t", "daily")], NOW)
        outcomes = [deleting.exception(), changing.exception()]
    assert sum(o is None for o in outcomes) == 1 and all(isinstance(o, Conflict) for o in outcomes if o)
