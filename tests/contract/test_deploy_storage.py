"""The deploy plan's bucket steps, applied through google-cloud-storage against a storage emulator.

The emulator (``gcp-storage-emulator``, in-process, as in Gabo's sink contract suite) takes only a
bucket's name on create — it ignores the location and every other setting — so the applier's
"patch whatever the create did not take" path runs here; real Cloud Storage takes them on create.
Its buckets are always in ``US``, so the declared location here is ``US``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from fakes.sample_infra import SAMPLE
from ferry.deploy import Applier, Step, plan
from ferry.errors import InfraError
from ferry.infra.model import Infra

R = "europe-west1"
WORKER = "ferry-worker"


@pytest.fixture
def client(gcs_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="test", credentials=AnonymousCredentials())


@pytest.fixture
def project() -> str:
    return f"p{uuid.uuid4().hex[:10]}"  # bucket names are global: one per test


def _infra(**bucket: Any) -> Infra:
    spec = {"name": "${project}-ferry-events", "location": "US",
            "lifecycle": [{"action": "Delete", "prefixes": ["staging/"], "age_days": 30}],
            "labels": {"team": "data"},
            "members": [{"service_account": WORKER, "role": "roles/storage.objectAdmin"}], **bucket}
    return Infra.model_validate({**SAMPLE, "cloud_env": {"FERRY_SINK": "gs://${project}-ferry-events"},
                                 "buckets": [spec]})


def _storage_steps(infra: Infra, project: str, tmp_path: Path) -> list[Step]:
    return [s for s in plan(infra, project, R, tmp_path) if s.via == "storage"]


def _apply(client: Any, steps: list[Step]) -> dict[str, tuple[str, str]]:
    applier = Applier(storage=client)
    return {s.kind: (o.action, o.detail) for s in steps for o in [applier.apply(s)]}


def test_bucket_is_created_with_its_settings_then_unchanged(client: Any, project: str, tmp_path: Path) -> None:
    steps = _storage_steps(_infra(), project, tmp_path)
    assert [s.kind for s in steps] == ["bucket", "bucket_iam"]
    assert {k: a for k, (a, _) in _apply(client, steps).items()} == {"bucket": "created", "bucket_iam": "created"}

    b = client.get_bucket(f"{project}-ferry-events")
    assert [dict(r) for r in b.lifecycle_rules] == [
        {"action": {"type": "Delete"}, "condition": {"age": 30, "matchesPrefix": ["staging/"]}}]
    assert b.labels == {"team": "data", "managed-by": "ferry"}
    assert b.iam_configuration.uniform_bucket_level_access_enabled
    assert b.iam_configuration.public_access_prevention == "enforced"
    assert b.storage_class == "STANDARD"
    policy = b.get_iam_policy(requested_policy_version=3)
    member = f"serviceAccount:{WORKER}@{project}.iam.gserviceaccount.com"
    assert [(x["role"], set(x["members"])) for x in policy.bindings] == [("roles/storage.objectAdmin", {member})]

    assert _apply(client, steps) == {"bucket": ("unchanged", ""), "bucket_iam": ("unchanged", "")}


def test_a_changed_lifecycle_and_storage_class_are_patched(client: Any, project: str, tmp_path: Path) -> None:
    _apply(client, _storage_steps(_infra(), project, tmp_path))
    b = client.get_bucket(f"{project}-ferry-events")
    b.labels = {**b.labels, "cost-center": "42"}  # set by hand: not ours, kept
    b.patch()

    changed = _infra(storage_class="NEARLINE",
                     lifecycle=[{"action": "Delete", "prefixes": ["staging/"], "age_days": 7},
                                {"action": "SetStorageClass", "storage_class": "COLDLINE", "age_days": 90,
                                 "prefixes": ["events/"]}])
    outcomes = _apply(client, _storage_steps(changed, project, tmp_path))
    assert outcomes == {"bucket": ("updated", "storageClass, lifecycle"), "bucket_iam": ("unchanged", "")}

    b = client.get_bucket(f"{project}-ferry-events")
    assert b.storage_class == "NEARLINE"
    assert [dict(r) for r in b.lifecycle_rules] == [
        {"action": {"type": "Delete"}, "condition": {"age": 7, "matchesPrefix": ["staging/"]}},
        {"action": {"type": "SetStorageClass", "storageClass": "COLDLINE"},
         "condition": {"age": 90, "matchesPrefix": ["events/"]}}]
    assert b.labels == {"team": "data", "managed-by": "ferry", "cost-center": "42"}
    assert b.iam_configuration.uniform_bucket_level_access_enabled  # the rest untouched
    assert _apply(client, _storage_steps(changed, project, tmp_path))["bucket"] == ("unchanged", "")


def test_a_declared_retention_is_set(client: Any, project: str, tmp_path: Path) -> None:
    steps = _storage_steps(_infra(retention="P30D", members=[]), project, tmp_path)
    assert _apply(client, steps) == {"bucket": ("created", "")}
    assert client.get_bucket(f"{project}-ferry-events").retention_period == 30 * 86400
    assert _apply(client, steps) == {"bucket": ("unchanged", "")}


def test_the_grant_joins_an_existing_binding_and_keeps_the_others(client: Any, project: str, tmp_path: Path) -> None:
    steps = _storage_steps(_infra(), project, tmp_path)
    Applier(storage=client).apply(steps[0])
    b = client.bucket(f"{project}-ferry-events")
    policy = b.get_iam_policy(requested_policy_version=3)
    policy.bindings.append({"role": "roles/storage.objectAdmin", "members": {"user:ops@example.com"}})
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {"group:readers@example.com"}})
    b.set_iam_policy(policy)

    assert Applier(storage=client).apply(steps[1]).action == "created"
    got = {x["role"]: set(x["members"]) for x in b.get_iam_policy(requested_policy_version=3).bindings}
    assert got == {"roles/storage.objectAdmin": {"user:ops@example.com",
                                                 f"serviceAccount:{WORKER}@{project}.iam.gserviceaccount.com"},
                   "roles/storage.objectViewer": {"group:readers@example.com"}}
    assert Applier(storage=client).apply(steps[1]).action == "unchanged"


def test_a_bucket_in_another_location_is_refused(client: Any, project: str, tmp_path: Path) -> None:
    _apply(client, _storage_steps(_infra(), project, tmp_path))
    moved = _storage_steps(_infra(location="${region}"), project, tmp_path)
    with pytest.raises(InfraError, match="exists in US, not EUROPE-WEST1"):
        Applier(storage=client).apply(moved[0])
