"""The apply service over the in-memory store: plans, idempotence, references, ownership, delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ferry.bootstrap import Services, in_memory
from ferry.domain import loading
from ferry.domain.manifests import Endpoint, Resource, Team, Workflow
from ferry.errors import Forbidden, NotFound, Unauthenticated, ValidationError
from ferry.services.apply import parse_documents

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "manifests"
NOW = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
ADA, PIA, PER, ROLF, EVE = "ada@example.com", "pia@example.com", "per@example.com", "rolf@example.com", "eve@x.com"


@pytest.fixture
def svc() -> Services:
    return in_memory()


def endpoint(name: str, owner: str = "team-playback", partitioning: str = "hourly") -> Endpoint:
    return Endpoint.model_validate({"kind": "Endpoint", "metadata": {"name": name, "owner": owner},
                                    "spec": {"partitioning": partitioning}})


def team(name: str, members: list[str], admins: list[str]) -> Team:
    return Team.model_validate({"kind": "Team", "metadata": {"name": name},
                                "spec": {"members": members, "admins": admins}})


def workflow(name: str, resources: list[str], owner: str = "team-playback") -> Workflow:
    return Workflow.model_validate({"kind": "Workflow", "metadata": {"name": name, "owner": owner},
                                    "spec": {"schedule": "hourly", "image": "img", "resources": resources}})


def actions(result) -> dict[str, str]:
    return {c.manifest.name: c.action for c in result.changes}


# -- plans and idempotence -----------------------------------------------------------------------------

def test_examples_create_then_unchanged_with_zero_writes(svc):
    manifests = loading.load([EXAMPLES])
    first = svc.apply.apply(manifests, NOW)
    assert first.counts() == {"created": len(manifests), "changed": 0, "unchanged": 0}
    assert svc.store.stats.writes >= len(manifests)  # subsystems' hooks may add derived state
    before = svc.store.stats.snapshot()
    second = svc.apply.apply(loading.load([EXAMPLES]), NOW + timedelta(hours=1))
    assert second.counts() == {"created": 0, "changed": 0, "unchanged": len(manifests)}
    assert svc.store.stats.since(before)["writes"] == 0


def test_dry_run_reports_and_writes_nothing(svc):
    svc.apply.apply([endpoint("a"), endpoint("b")], NOW)
    before = svc.store.stats.snapshot()
    result = svc.apply.apply([endpoint("a"), endpoint("b", partitioning="daily"), endpoint("c")], NOW,
                             dry_run=True)
    assert result.dry_run
    assert actions(result) == {"a": "unchanged", "b": "changed", "c": "created"}
    assert result.counts() == {"created": 1, "changed": 1, "unchanged": 1}
    assert svc.store.stats.since(before)["writes"] == 0
    assert svc.manifests.get("Endpoint", "c") is None
    assert svc.manifests.get("Endpoint", "b").model().spec.partitioning == "hourly"


def test_change_bumps_generation_and_keeps_created_at(svc):
    svc.apply.apply([endpoint("a")], NOW)
    later = NOW + timedelta(days=1)
    result = svc.apply.apply([endpoint("a", partitioning="daily")], later)
    assert actions(result) == {"a": "changed"}
    rec = svc.manifests.get("Endpoint", "a")
    assert rec.generation == 2 and rec.created_at == NOW and rec.updated_at == later
    assert rec.model().spec.partitioning == "daily"
    assert result.to_dict()["changes"] == [{"kind": "Endpoint", "name": "a", "action": "changed", "generation": 2}]


def test_unchanged_keeps_generation(svc):
    svc.apply.apply([endpoint("a")], NOW)
    result = svc.apply.apply([endpoint("a")], NOW + timedelta(days=1))
    assert result.to_dict()["changes"][0]["generation"] == 1
    assert svc.manifests.get("Endpoint", "a").updated_at == NOW


def test_same_name_in_different_kinds_are_different_objects(svc):
    r = Resource.model_validate({"kind": "Resource", "metadata": {"name": "a"}, "spec": {"concurrency": 1}})
    assert svc.apply.apply([endpoint("a"), r], NOW).counts()["created"] == 2


# -- cross-object references ---------------------------------------------------------------------------

def test_missing_resource_reference_fails_and_writes_nothing(svc):
    with pytest.raises(ValidationError) as info:
        svc.apply.apply([endpoint("a"), workflow("w", ["slots", "gpus"])], NOW)
    fields = [d["field"] for d in info.value.details]
    assert fields == ["spec.resources[0]", "spec.resources[1]"]
    assert "not declared" in info.value.details[0]["reason"]
    assert svc.store.stats.writes == 0
    assert svc.manifests.get("Endpoint", "a") is None


def test_resource_declared_in_the_same_apply_or_earlier(svc):
    slots = Resource.model_validate({"kind": "Resource", "metadata": {"name": "slots"}, "spec": {"concurrency": 2}})
    svc.apply.apply([slots, workflow("w1", ["slots"])], NOW)
    svc.apply.apply([workflow("w2", ["slots"])], NOW)
    assert svc.manifests.get("Workflow", "w2") is not None


def test_parse_documents_reports_every_problem_and_duplicates():
    docs = [{"kind": "Resource", "metadata": {"name": "r"}, "spec": {"concurrency": 1}},
            {"kind": "Resource", "metadata": {"name": "r"}, "spec": {"concurrency": 1}},
            {"kind": "Endpoint", "metadata": {"name": "e"}, "spec": {}}]
    with pytest.raises(ValidationError) as info:
        parse_documents(docs, ["a.yaml", "a.yaml", "b.yaml"])
    got = {(d["file"], d["field"]) for d in info.value.details}
    assert got == {("b.yaml", "metadata.owner"), ("(input)", "metadata.name")}


# -- ownership -----------------------------------------------------------------------------------------

@pytest.fixture
def owned(svc) -> Services:
    svc.apply.apply([team("admins", [ADA], [ADA]), team("team-playback", [PIA, PER], [PIA]),
                     endpoint("plays")], NOW)
    return svc


def test_undeclared_team_is_open(svc):
    svc.apply.apply([endpoint("x", owner="team-nobody")], NOW, actor=None)
    svc.apply.apply([endpoint("x", owner="team-nobody", partitioning="daily")], NOW, actor=EVE)


def test_declared_team_members_may_change_others_may_not(owned):
    owned.apply.apply([endpoint("plays", partitioning="daily")], NOW, actor=PER)
    before = owned.store.stats.snapshot()
    with pytest.raises(Forbidden) as info:
        owned.apply.apply([endpoint("plays", partitioning="PT5M")], NOW, actor=EVE)
    assert info.value.details["actor"] == EVE and info.value.details["owner"] == "team-playback"
    assert "you are" in info.value.message and "--as USER" in info.value.details["hint"]
    assert owned.store.stats.since(before)["writes"] == 0


def test_anonymous_is_refused_for_declared_teams(owned):
    with pytest.raises(Unauthenticated):
        owned.apply.apply([endpoint("new-one")], NOW, actor=None)
    assert owned.manifests.get("Endpoint", "new-one") is None


def test_unchanged_objects_need_no_permission(owned):
    result = owned.apply.apply([endpoint("plays")], NOW, actor=EVE)
    assert result.counts()["unchanged"] == 1


def test_admins_team_may_change_everything(owned):
    owned.apply.apply([endpoint("plays", partitioning="daily")], NOW, actor=ADA)
    owned.apply.apply([team("team-playback", [PIA], [PIA])], NOW, actor=ADA)
    owned.apply.delete("Endpoint", "plays", NOW, actor=ADA)


def test_moving_an_object_to_another_team_needs_both(owned):
    owned.apply.apply([team("team-royalties", [ROLF], [ROLF])], NOW, actor=ADA)
    with pytest.raises(Forbidden):
        owned.apply.apply([endpoint("plays", owner="team-royalties")], NOW, actor=ROLF)  # not playback's
    with pytest.raises(Forbidden):
        owned.apply.apply([endpoint("plays", owner="team-royalties")], NOW, actor=PIA)  # not royalties'


def test_changing_a_team_needs_one_of_its_admins(owned):
    with pytest.raises(Forbidden, match="not one of the admins of team"):
        owned.apply.apply([team("team-playback", [PIA, PER, EVE], [PIA])], NOW, actor=PER)  # member only
    with pytest.raises(Unauthenticated):
        owned.apply.apply([team("team-playback", [PIA, PER, EVE], [PIA])], NOW, actor=None)
    owned.apply.apply([team("team-playback", [PIA, PER, EVE], [PIA])], NOW, actor=PIA)
    assert EVE in owned.manifests.get("Team", "team-playback").model().spec.members


def test_once_admins_team_exists_anonymous_may_not_change_it(owned):
    with pytest.raises(Forbidden):
        owned.apply.apply([team("admins", [EVE], [EVE])], NOW, actor=EVE)


# -- delete --------------------------------------------------------------------------------------------

def test_delete_removes_and_reports(owned):
    rec = owned.apply.delete("Endpoint", "plays", NOW, actor=PIA)
    assert rec.name == "plays" and owned.manifests.get("Endpoint", "plays") is None


def test_delete_checks_ownership_and_existence(owned):
    with pytest.raises(Forbidden):
        owned.apply.delete("Endpoint", "plays", NOW, actor=EVE)
    with pytest.raises(NotFound):
        owned.apply.delete("Endpoint", "never", NOW, actor=PIA)
    with pytest.raises(Forbidden):
        owned.apply.delete("Team", "team-playback", NOW, actor=PER)
    assert owned.manifests.get("Endpoint", "plays") is not None


# -- listing -------------------------------------------------------------------------------------------

def test_list_pages_by_owner(svc):
    svc.apply.apply([endpoint(f"e{i:03d}", owner="a" if i % 3 else "b") for i in range(50)], NOW)
    seen, token = [], None
    while True:
        page, token = svc.manifests.list("Endpoint", owner="a", limit=7, after=token)
        seen += [r.name for r in page]
        if token is None:
            break
    assert seen == [f"e{i:03d}" for i in range(50) if i % 3]
    assert len(svc.manifests.all("Endpoint", owner="b")) == 17


def test_resources_are_shared_pools_changed_only_by_admins(svc):
    pool = Resource.model_validate({"kind": "Resource", "metadata": {"name": "slots"}, "spec": {"concurrency": 2}})
    svc.apply.apply([pool], NOW, EVE)  # no admins team declared yet: open
    svc.apply.apply([team("admins", [ADA], [ADA])], NOW, ADA)
    bigger = Resource.model_validate({"kind": "Resource", "metadata": {"name": "slots"}, "spec": {"concurrency": 9}})
    with pytest.raises(Forbidden):
        svc.apply.apply([bigger], NOW, EVE)
    with pytest.raises(Unauthenticated):
        svc.apply.apply([bigger], NOW, None)
    with pytest.raises(Forbidden):
        svc.apply.delete("Resource", "slots", NOW, EVE)
    assert svc.apply.apply([bigger], NOW, ADA).counts()["changed"] == 1
