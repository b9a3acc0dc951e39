"""The gcloud and Firestore-admin steps, applied through injected fakes (no network, no gcloud)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes.firestore_admin import FakeFirestoreAdmin
from fakes.gcloud import FakeGcloud
from ferry.deploy import Applier, plan
from ferry.deploy.apply import function_urls, project_number
from ferry.errors import InfraError
from ferry.infra.model import Infra

P, R = "proj-1", "europe-west1"
GCLOUD_KINDS = {"apis", "service_account", "iam", "function"}


def _apply(steps, applier):
    return [(s.kind, s.name, applier.apply(s).action) for s in steps if s.kind in GCLOUD_KINDS | {"index"}]


def test_first_run_creates_second_changes_nothing(infra: Infra, tmp_path: Path) -> None:
    gcloud, admin = FakeGcloud(), FakeFirestoreAdmin()
    steps = plan(infra, P, R, tmp_path, project_number=gcloud.project_number)
    first = _apply(steps, Applier(runner=gcloud, firestore_admin=admin))
    assert {a for _, _, a in first} <= {"created", "updated"}
    assert len(gcloud.functions) == 3
    assert gcloud.enabled >= {"cloudfunctions.googleapis.com", "cloudscheduler.googleapis.com"}
    assert len(admin.created) == 1
    writes = len(gcloud.writes())

    second = _apply(steps, Applier(runner=gcloud, firestore_admin=admin))
    assert [a for _, _, a in second] == ["unchanged"] * len(second)
    assert len(gcloud.writes()) == writes, "a second deploy must not write"
    assert len(admin.created) == 1


def test_changed_function_settings_redeploy_only_that_function(infra: Infra, tmp_path: Path) -> None:
    gcloud = FakeGcloud()
    _apply(plan(infra, P, R, tmp_path, project_number="1"), Applier(runner=gcloud, firestore_admin=FakeFirestoreAdmin()))
    data = infra.model_dump()
    data["functions"][1]["memory"] = "2Gi"
    changed = plan(Infra.model_validate(data), P, R, tmp_path, project_number="1")
    fn_steps = [s for s in changed if s.kind == "function"]
    outcomes = {s.name: Applier(runner=gcloud).apply(s).action for s in fn_steps}
    assert outcomes == {"api": "unchanged", "tick": "updated", "deliver": "unchanged"}
    assert gcloud.functions["tick"]["flags"]["memory"] == "2Gi"


def test_a_binding_before_its_service_account_exists_fails_clearly(infra: Infra, tmp_path: Path) -> None:
    steps = plan(infra, P, R, tmp_path)
    grant = next(s for s in steps if s.kind == "iam")
    with pytest.raises(InfraError, match="does not exist"):
        Applier(runner=FakeGcloud()).apply(grant)


def test_invoker_binding_needs_the_function_deployed(infra: Infra, tmp_path: Path) -> None:
    gcloud = FakeGcloud(service_accounts={f"ferry-scheduler@{P}.iam.gserviceaccount.com"})
    invoker = next(s for s in plan(infra, P, R, tmp_path) if ":invoker:" in s.name and s.name.startswith("tick"))
    with pytest.raises(InfraError):
        Applier(runner=gcloud).apply(invoker)


def test_urls_and_project_number_are_read_with_gcloud(infra: Infra, tmp_path: Path) -> None:
    gcloud = FakeGcloud(project_number="777")
    assert project_number(P, gcloud) == "777"
    with pytest.raises(InfraError, match="no URL"):
        function_urls(infra, P, R, gcloud)
    _apply([s for s in plan(infra, P, R, tmp_path) if s.kind in ("service_account", "function")],
           Applier(runner=gcloud))
    assert function_urls(infra, P, R, gcloud) == {n: f"https://{n}-x7k2q-ew.a.run.app"
                                                 for n in ("api", "tick", "deliver")}


def test_an_existing_composite_index_is_recognised_despite_the_stored_name_field(infra: Infra,
                                                                                 tmp_path: Path) -> None:
    admin = FakeFirestoreAdmin()
    (step,) = [s for s in plan(infra, P, R, tmp_path) if s.kind == "index"]
    assert Applier(firestore_admin=admin).apply(step).action == "created"
    assert [f.field_path for f in admin.list_indexes({"parent": step.request["parent"]})[0].fields][-1] == "__name__"
    assert Applier(firestore_admin=admin).apply(step).action == "unchanged"
