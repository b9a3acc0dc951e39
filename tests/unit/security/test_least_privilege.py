"""Least privilege in infra/ (findings: ferry-api held project-wide pubsub.editor and run.developer, every
publisher project-wide pubsub.publisher, every function ingress `all`, no invoker for api/ingest/dashboard,
ferry-styx project-wide iam.serviceAccountUser). A test over the real deploy plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes.gcloud import deployed_env
from ferry.deploy import plan
from ferry.deploy.planning import PROJECT_ROLE_HOLDERS, PROJECT_ROLES
from ferry.errors import ValidationError
from ferry.infra.model import Infra, load

P, R = "demo", "europe-west1"


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return plan(load(), P, R, tmp_path_factory.mktemp("bundle"))


def _project_grants(steps) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {(s.expect["member"], s.expect["role"]) for s in steps
            if s.kind == "iam" and s.request[1:3] == ["projects", "add-iam-policy-binding"]}


def test_no_project_wide_role_outside_the_allow_list(steps) -> None:  # type: ignore[no-untyped-def]
    allowed = {r if not r.startswith("custom:") else f"projects/{P}/roles/{r[7:]}" for r in PROJECT_ROLES}
    for member, role in _project_grants(steps):
        assert role in allowed, (member, role)
        holders = PROJECT_ROLE_HOLDERS.get(role)
        if holders:
            assert member.split(":")[1].split("@")[0] in holders, (member, role)
    roles = {r for _, r in _project_grants(steps)}
    assert not roles & {"roles/pubsub.editor", "roles/iam.serviceAccountUser", "roles/owner", "roles/editor",
                        "roles/pubsub.admin", "roles/run.admin"}


def test_the_api_has_no_project_wide_pubsub_or_run_role(steps) -> None:  # type: ignore[no-untyped-def]
    api = {r for m, r in _project_grants(steps) if m.startswith("serviceAccount:ferry-api@")}
    assert not {r for r in api if r.startswith(("roles/pubsub.", "roles/run."))}, api
    assert f"projects/{P}/roles/ferryEventTypeProvisioner" in api


def test_landings_and_alerts_are_granted_per_topic(steps) -> None:  # type: ignore[no-untyped-def]
    topic = {(s.request[4], s.expect["member"].split(":")[1].split("@")[0], s.expect["role"]) for s in steps
             if s.kind == "iam" and s.request[1:4] == ["pubsub", "topics", "add-iam-policy-binding"]
             and "gcp-sa-pubsub" not in s.expect["member"]}
    assert ("ferry-alerts", "ferry-datamon", "roles/pubsub.publisher") in topic
    assert ("gabo-work-orders", "ferry-gabo-worker", "roles/pubsub.publisher") in topic
    assert ("gabo-close-orders", "ferry-gabo-worker", "roles/pubsub.publisher") in topic
    assert ("ferry-alerts", "ferry-gabo-worker", "roles/pubsub.publisher") in topic  # capacity, missing events
    assert not [t for t in topic if t[0] == "ferry-partitions"]  # declared producers only (none by default)
    assert not [t for t in topic if t[1] == "ferry-gabo-ingest"]  # ingest publishes to event types' topics only


def test_nobody_holds_a_pubsub_data_role_on_the_project(steps) -> None:  # type: ignore[no-untyped-def]
    """The remaining finding: ingest and the Gabo worker held project-wide pubsub.publisher (per-type topics
    appear after the deploy), so either could publish forged landings to ferry-partitions. Now Gabo's
    provisioning grants them on each type's own topics and subscriptions (ferry.gabo.provisioning.access)."""
    data = {(m, r) for m, r in _project_grants(steps) if r in ("roles/pubsub.publisher", "roles/pubsub.subscriber",
                                                              "roles/pubsub.editor")}
    assert data == set()
    api = next(s for s in steps if s.kind == "function" and s.name == "ingest")
    env = deployed_env(api)
    member = "serviceAccount:{}@demo.iam.gserviceaccount.com".format
    assert env["FERRY_GABO_PUBLISHERS"].split(",") == [member("ferry-api"), member("ferry-gabo-ingest"),
                                                       member("ferry-gabo-worker")]
    assert env["FERRY_GABO_SUBSCRIBERS"].split(",") == [member("ferry-api"), member("ferry-gabo-worker")]
    assert env["FERRY_PUBSUB_AGENT"].endswith("@gcp-sa-pubsub.iam.gserviceaccount.com")
    role = next(s for s in steps if s.kind == "custom_role" and s.name == "ferryEventTypeProvisioner")
    assert {"pubsub.topics.setIamPolicy", "pubsub.subscriptions.setIamPolicy"} <= set(
        role.expect["permissions"].split(","))


def test_deploying_needs_first_admins(tmp_path: Path) -> None:
    """Teams are closed in the cloud only when FERRY_ADMINS is set: the plan sets it from infra's admins
    (or --admin) on every function and refuses a deployment without any."""
    steps = plan(load(), P, R, tmp_path)
    assert {deployed_env(s)["FERRY_ADMINS"] for s in steps if s.kind == "function"} == {"ferry-admin@example.com"}
    with pytest.raises(ValidationError, match="first admins"):
        plan(load().model_copy(update={"admins": []}), P, R, tmp_path)
    with pytest.raises(ValueError, match="not an e-mail"):
        Infra.model_validate({**load().model_dump(), "admins": ["ana"]})


def test_ferry_deploy_takes_the_first_admins(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from ferry.cli import main

    out = CliRunner().invoke(main, ["--json", "deploy", "--project", P, "--region", R, "--dry-run",
                                    "--bundle", str(tmp_path / "b"), "--admin", "ana@corp.example",
                                    "--admin", "bo@corp.example"])
    assert out.exit_code == 0, out.output
    steps = json.loads(out.output)["steps"]
    functions = [s for s in steps if s["kind"] == "function"]
    assert functions and all("FERRY_ADMINS=ana@corp.example,bo@corp.example" in " ".join(s["request"])
               for s in functions)


def test_the_darkload_report_reads_the_sink_and_alerts_with_scoped_grants_only(steps) -> None:  # type: ignore[no-untyped-def]
    """The report runs in the API: it reads the events bucket (that bucket only; the API's grant there is
    the drain's, which also writes) and publishes to ferry-alerts (that topic only); no project-wide
    storage or Pub/Sub role."""
    member = f"serviceAccount:ferry-api@{P}.iam.gserviceaccount.com"
    buckets = {s.request["bucket"] for s in steps if s.kind == "bucket_iam" and s.request["member"] == member}
    assert buckets == {f"{P}-ferry-events"}
    topics = {s.request[4] for s in steps if s.kind == "iam" and s.expect["member"] == member
              and s.request[1:4] == ["pubsub", "topics", "add-iam-policy-binding"]}
    assert topics == {"ferry-alerts"}
    project = {r for m, r in _project_grants(steps) if m == member}
    assert project and not {r for r in project if r.startswith(("roles/storage.", "roles/pubsub."))}, project


def test_no_function_is_public_and_people_facing_ones_name_their_invokers(steps) -> None:  # type: ignore[no-untyped-def]
    functions = {s.name: dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in s.request if a.startswith("--"))
                 for s in steps if s.kind == "function"}
    assert all("no-allow-unauthenticated" in f and "allow-unauthenticated" not in f for f in functions.values())
    invokers = {(s.request[4], s.expect["member"]) for s in steps if s.kind == "iam" and ":invoker:" in s.name}
    people = {f for f, m in invokers if m.startswith(("group:", "user:", "domain:"))}
    assert people == {"api", "ingest", "dashboard"}
    for name, flags in functions.items():
        assert flags["ingress-settings"] == ("all" if name in people else "internal-only"), name
    assert not [m for _, m in invokers if m in ("allUsers", "allAuthenticatedUsers")]


def test_styx_acts_as_the_workflow_runners_only(steps) -> None:  # type: ignore[no-untyped-def]
    users = [(s.request[4], s.expect["member"]) for s in steps
             if s.kind == "iam" and s.expect.get("role") == "roles/iam.serviceAccountUser"]
    assert users == [(f"ferry-workflow@{P}.iam.gserviceaccount.com", f"serviceAccount:ferry-styx@{P}.iam.gserviceaccount.com")]
    api = next(s for s in steps if s.kind == "function" and s.name == "api")
    assert f"FERRY_RUNNER_ACCOUNTS=ferry-workflow@{P}.iam.gserviceaccount.com" in " ".join(api.request)


def test_a_project_role_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    from fakes.sample_infra import SAMPLE

    bad = Infra.model_validate({**SAMPLE, "service_accounts": [*SAMPLE["service_accounts"][1:],
                                {"name": "ferry-api", "roles": ["roles/pubsub.editor"]}]})
    with pytest.raises(ValidationError, match="may not be granted on the whole project"):
        plan(bad, P, R, tmp_path)
    held = Infra.model_validate({**SAMPLE, "service_accounts": [*SAMPLE["service_accounts"][1:],
                                 {"name": "ferry-api", "roles": ["roles/run.developer"]}]})
    with pytest.raises(ValidationError, match="is for ferry-styx only"):
        plan(held, P, R, tmp_path)
