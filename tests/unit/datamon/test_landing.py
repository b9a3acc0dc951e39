from __future__ import annotations

from datetime import timedelta

import pytest

from ferry.bootstrap import Services
from ferry.datamon import landing
from ferry.errors import NotFound, ValidationError

from .conftest import T0, apply, endpoint


@pytest.fixture
def hourly(svc: Services) -> Services:
    apply(svc, endpoint("plays", partitioning="hourly", start="2026-11-26T00:00:00Z",
                        sla={"error_after": "PT2H"}))
    return svc


def test_land_then_landed(hourly: Services) -> None:
    rec = landing.land(hourly.store, "plays", "2026-11-26T10", now=T0, records=5, bytes=100, location="gs://b/x")
    assert rec["relanded"] is False and rec["landings"] == 1 and rec["records"] == 5
    assert landing.landed(hourly.store, "plays", ["2026-11-26T10", "2026-11-26T11", "bogus"]) == {"2026-11-26T10"}


def test_relanding_keeps_first_time_updates_stats(hourly: Services) -> None:
    first = landing.land(hourly.store, "plays", "2026-11-26T10", now=T0, records=5)
    again = landing.land(hourly.store, "plays", "2026-11-26T10", now=T0 + timedelta(hours=1), records=7, source="cli")
    assert again["relanded"] is True and again["landings"] == 2
    assert again["landed_at"] == first["landed_at"] and again["records"] == 7
    doc = hourly.store.get("datamon_partitions", "plays@2026-11-26T10")
    assert doc is not None and len(doc["relandings"]) == 1 and doc["relandings"][0]["source"] == "cli"


def test_late_landing_is_reported(hourly: Services) -> None:
    rec = landing.land(hourly.store, "plays", "2026-11-26T08", now=T0)  # ended 09:00, deadline 11:00
    assert rec["late"] is True and rec["late_seconds"] == 3600


@pytest.mark.parametrize("partition", ["2026-11-26", "2026-11-26T10:00", "garbage", "2026-11-25T23"])
def test_invalid_partition_rejected_nothing_written(hourly: Services, partition: str) -> None:
    with pytest.raises(ValidationError):
        landing.land(hourly.store, "plays", partition, now=T0)
    assert landing.landed(hourly.store, "plays", [partition]) == set()


def test_unknown_endpoint(svc: Services) -> None:
    with pytest.raises(NotFound):
        landing.land(svc.store, "nope", "2026-11-26", now=T0)


def test_negative_stats_rejected(hourly: Services) -> None:
    with pytest.raises(ValidationError):
        landing.land(hourly.store, "plays", "2026-11-26T10", now=T0, records=-1)
    assert landing.landed(hourly.store, "plays", ["2026-11-26T10"]) == set()


def test_landed_is_one_batched_read(hourly: Services) -> None:
    before = hourly.store.stats.snapshot()
    landing.landed(hourly.store, "plays", [f"2026-11-26T{h:02d}" for h in range(10)])
    assert hourly.store.stats.since(before)["reads"] == 10  # one get_many of 10 ids


def test_datamons_port_runs_on_a_store_alone() -> None:
    """Landings (Datamon's port for Styx and Gabo) takes what it uses — a store and who may invalidate —
    and nothing of the composition root."""
    from ferry.datamon.inprocess import Landings
    from ferry.domain.manifests import KINDS
    from ferry.services.authz import Authorizer
    from ferry.store.manifests import ManifestRepository
    from ferry.store.memory import MemoryStore

    store = MemoryStore()
    manifest = KINDS["Endpoint"].model_validate(endpoint("plays", partitioning="hourly",
                                                         start="2026-11-26T00:00:00Z"))
    store.write([ManifestRepository.op_for(ManifestRepository.record_for(manifest, None, T0))])
    port = Landings(store, lambda: Authorizer(ManifestRepository(store)))
    assert port.land("plays", "2026-11-26T10", now=T0, records=5)["relanded"] is False
    assert port.landed("plays", ["2026-11-26T10", "2026-11-26T11"]) == {"2026-11-26T10"}
    inv = port.invalidate("plays", "2026-11-26T10", reason="bad rows", actor="alice@example.com", now=T0)
    assert inv["invalidated"] is True and port.landed("plays", ["2026-11-26T10"]) == set()
