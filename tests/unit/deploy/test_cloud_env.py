"""The cloud environment (``cloud_env``) and the buckets of ``infra/``: merged, validated, planned;
and kept out of the local stack."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from fakes.gcloud import deployed_env
from fakes.sample_infra import SAMPLE
from ferry.cli import main
from ferry.config import Settings
from ferry.deploy import plan
from ferry.deploy.planning import cloud_env
from ferry.dev import stack
from ferry.errors import ValidationError
from ferry.infra.model import Infra, load

P, R = "demo", "europe-west1"




def _write(d: Path, name: str, doc: dict[str, Any]) -> None:
    d.mkdir(exist_ok=True)
    (d / name).write_text(yaml.safe_dump(doc))


# -- the repository's infra/ -------------------------------------------------------------------------


def test_every_deployed_function_gets_the_cloud_environment(tmp_path: Path) -> None:
    infra = load()
    steps = plan(infra, P, R, tmp_path)
    functions = [s for s in steps if s.kind == "function"]
    assert {s.name for s in functions} == {f.name for f in infra.functions}
    for s in functions:
        env = deployed_env(s)
        assert env["FERRY_IDENTITY"] == "oidc", s.name
        assert env["FERRY_LAUNCHER"] == "cloudrun", s.name
        assert env["FERRY_SINK"] == "gs://demo-ferry-events", s.name
        assert (env["GOOGLE_CLOUD_PROJECT"], env["FERRY_REGION"]) == (P, R)
    assert "${" not in json.dumps([s.to_dict() for s in steps], default=str)  # every placeholder substituted


def test_cloud_settings_are_not_per_function_env() -> None:
    # The local stack applies a function's own env: the cloud values must not live there.
    for fn in load().functions:
        assert not {"FERRY_IDENTITY", "FERRY_LAUNCHER", "FERRY_SINK"} & set(fn.env), fn.name


def test_the_events_bucket_comes_before_the_functions(tmp_path: Path) -> None:
    steps = plan(load(), P, R, tmp_path)
    kinds = [s.kind for s in steps]
    bucket = steps[kinds.index("bucket")]
    assert bucket.name == "demo-ferry-events"
    assert bucket.via == "storage"
    res = bucket.request["bucket"]
    assert (res["location"], res["storageClass"]) == ("EUROPE-WEST1", "STANDARD")
    assert res["iamConfiguration"] == {"uniformBucketLevelAccess": {"enabled": True},
                                       "publicAccessPrevention": "enforced"}
    assert res["lifecycle"]["rule"] == [{"action": {"type": "Delete"},
                                         "condition": {"age": 400, "matchesPrefix": ["staging/", "darkload/staging/"]}}]
    assert "retentionPolicy" not in res  # closing deletes and replaces staging objects
    last_account = max(i for i, k in enumerate(kinds) if k == "service_account")
    assert last_account < kinds.index("bucket") < kinds.index("bucket_iam") < kinds.index("function")


def test_the_gabo_workers_storage_role_is_scoped_to_the_bucket(tmp_path: Path) -> None:
    steps = plan(load(), P, R, tmp_path)
    worker = f"serviceAccount:ferry-gabo-worker@{P}.iam.gserviceaccount.com"
    project_storage = [(s.expect["member"], s.expect["role"]) for s in steps
                       if s.kind == "iam" and s.expect["role"].startswith("roles/storage.")]
    assert project_storage == []
    grants = [s for s in steps if s.kind == "bucket_iam"]
    api = f"serviceAccount:ferry-api@{P}.iam.gserviceaccount.com"  # `ferry delete --drain` closes in the request
    workflow = f"serviceAccount:ferry-workflow@{P}.iam.gserviceaccount.com"  # workflows read closed partitions
    assert [g.request for g in grants] == [{"bucket": "demo-ferry-events", "member": m, "role": "roles/storage.objectAdmin"}
                                           for m in (worker, api)] + [
        {"bucket": "demo-ferry-events", "member": workflow, "role": "roles/storage.objectViewer"}]
    grant = grants[0]
    # the sink the functions get is that very bucket
    assert cloud_env(load(), P, R)["FERRY_SINK"] == f"gs://{grant.request['bucket']}"


def test_the_local_stack_does_not_apply_the_cloud_environment(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FERRY_IDENTITY", "FERRY_LAUNCHER", "FERRY_SINK", "FERRY_BACKLOG", "FERRY_SECRETS"):
        monkeypatch.delenv(name, raising=False)
    infra = load()
    cloud = cloud_env(infra, stack.DEFAULT_PROJECT, R)
    config = stack.StackConfig(home=tmp_path)
    for fn in infra.functions:
        env = stack.function_env(config, tmp_path, "127.0.0.1:1", "127.0.0.1:2", None, fn)
        assert {k: v for k, v in cloud.items() if env.get(k) == v} == {}, fn.name
        for name in ("FERRY_IDENTITY", "FERRY_LAUNCHER", "FERRY_SINK", "FERRY_BACKLOG",
                     "FERRY_SECRETS"):  # what it would read
            if name in env:
                monkeypatch.setenv(name, env[name])
            else:
                monkeypatch.delenv(name, raising=False)
        settings = Settings()
        assert (settings.identity, settings.launcher) == ("header", "local"), fn.name
        assert settings.sink.startswith("file://"), fn.name
        assert settings.backlog == "pull", fn.name  # the emulator has no metrics
        assert settings.secrets == "local", fn.name  # channel secrets from env vars and $FERRY_HOME/secrets


# -- plan --------------------------------------------------------------------------------------------


def _with(**sections: Any) -> Infra:
    return Infra.model_validate({**SAMPLE, **sections})


def test_function_env_layers_cloud_env_then_project_then_its_own(tmp_path: Path) -> None:
    infra = _with(cloud_env={"FERRY_LAUNCHER": "local", "FERRY_SINK": "gs://${project}-s/${region}"},
                  buckets=[{"name": "${project}-s"}])
    fns = {s.name: deployed_env(s) for s in plan(infra, P, R, tmp_path) if s.kind == "function"}
    assert fns["tick"] == {"FERRY_LAUNCHER": "local", "FERRY_SINK": "gs://demo-s/europe-west1",
                           "GOOGLE_CLOUD_PROJECT": P, "FERRY_REGION": R, "FERRY_IDENTITY": "oidc",
                           "FERRY_FUNCTION": "tick", "FERRY_AUDIENCES": f"https://{R}-{P}.cloudfunctions.net/tick",
                           "FERRY_TIMEOUT_S": "300", "FERRY_ADMINS": "admin@example.com",
                           "FERRY_PUBSUB_AGENT": "serviceAccount:service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com",
                           "FERRY_OPERATOR_CALLERS": f"ferry-scheduler@{P}.iam.gserviceaccount.com"}
    assert fns["api"]["FERRY_IDENTITY"] == "oidc"


def test_no_deployed_function_trusts_a_header(tmp_path: Path) -> None:
    """The finding: without cloud_env a deployed function fell back to X-Ferry-User. The plan sets
    FERRY_IDENTITY=oidc itself and refuses any other mode."""
    fns = {s.name: deployed_env(s) for s in plan(_with(cloud_env={}), P, R, tmp_path) if s.kind == "function"}
    assert {f: e["FERRY_IDENTITY"] for f, e in fns.items()} == {f: "oidc" for f in fns}
    for bad in ("header", "iap"):
        with pytest.raises(ValidationError, match="FERRY_IDENTITY must be oidc"):
            plan(_with(cloud_env={"FERRY_IDENTITY": bad}), P, R, tmp_path)


def test_a_changed_cloud_env_redeploys_every_function(tmp_path: Path) -> None:
    a = plan(_with(cloud_env={"FERRY_LAUNCHER": "cloudrun"}), P, R, tmp_path)
    b = plan(_with(cloud_env={"FERRY_LAUNCHER": "local"}), P, R, tmp_path)
    assert [x.name for x, y in zip(a, b, strict=True) if x != y] == ["api", "tick", "deliver"]


def test_bucket_request_with_retention_labels_and_storage_class_rules(tmp_path: Path) -> None:
    infra = _with(buckets=[{"name": "${project}-archive-${region}", "location": "EU", "storage_class": "NEARLINE",
                            "retention": "P30D", "labels": {"team": "data"}, "uniform_access": False,
                            "public_access_prevention": "inherited",
                            "lifecycle": [{"action": "SetStorageClass", "storage_class": "ARCHIVE",
                                           "age_days": 365}]}])
    (step,) = [s for s in plan(infra, P, R, tmp_path) if s.kind == "bucket"]
    assert step.request == {"project": P, "bucket": {
        "name": "demo-archive-europe-west1", "location": "EU", "storageClass": "NEARLINE",
        "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": False}, "publicAccessPrevention": "inherited"},
        "lifecycle": {"rule": [{"action": {"type": "SetStorageClass", "storageClass": "ARCHIVE"},
                                "condition": {"age": 365}}]},
        "labels": {"team": "data", "managed-by": "ferry"},
        "retentionPolicy": {"retentionPeriod": str(30 * 86400)}}}
    assert "move to ARCHIVE every object after 365 days" in step.description
    assert not [s for s in plan(infra, P, R, tmp_path) if s.kind == "bucket_iam"]


@pytest.mark.parametrize("project", ["example.com:proj", "x" * 60])
def test_a_substituted_bucket_name_must_be_valid(project: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a valid Cloud Storage bucket name"):
        plan(_with(buckets=[{"name": "${project}-events"}]), project, R, tmp_path)


# -- model -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sections", "problem"), [
    ({"cloud_env": {"FERRY_SINK": "gs://${projekt}-x"}, "buckets": [{"name": "${projekt}-x"}]},
     "unknown placeholder ${projekt}"),
    ({"cloud_env": {"FERRY_SINK": "gs://${project}-nope"}}, "bucket '${project}-nope' is not declared"),
    ({"cloud_env": {"GOOGLE_CLOUD_PROJECT": "x"}}, "GOOGLE_CLOUD_PROJECT is set by ferry deploy itself"),
    ({"cloud_env": {"ferry-sink": "x"}}, "is not an environment variable name"),
    ({"buckets": [{"name": "b-1", "members": [{"service_account": "ghost", "role": "roles/storage.objectAdmin"}]}]},
     "unknown service account 'ghost'"),
    ({"buckets": [{"name": "b-1"}, {"name": "b-1"}]}, "bucket 'b-1' is declared twice"),
    ({"buckets": [{"name": "b-1", "lifecycle": [{"action": "SetStorageClass", "age_days": 3}]}]},
     "needs a storage_class"),
    ({"buckets": [{"name": "b-1", "members": [{"service_account": "ferry-worker", "role": "roles/owner"}]}]},
     "roles/storage"),
    ({"buckets": [{"name": "b-1", "retention": "30 days"}]}, "not an ISO 8601 duration"),
])
def test_invalid_cloud_sections_are_refused(sections: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        _with(**sections)


def test_load_merges_cloud_env_across_files_and_concatenates_lists(tmp_path: Path) -> None:
    d = tmp_path / "infra"
    _write(d, "a.yaml", {**SAMPLE, "cloud_env": {"FERRY_IDENTITY": "oidc", "FERRY_LAUNCHER": "cloudrun"}})
    _write(d, "b.yaml", {"cloud_env": {"FERRY_LAUNCHER": "cloudrun", "FERRY_LOG_LEVEL": "INFO"},
                         "buckets": [{"name": "${project}-b"}]})
    _write(d, "c.yaml", {"cloud_env": None, "buckets": [{"name": "${project}-c"}]})
    infra = load(d)
    assert infra.cloud_env == {"FERRY_IDENTITY": "oidc", "FERRY_LAUNCHER": "cloudrun", "FERRY_LOG_LEVEL": "INFO"}
    assert [b.name for b in infra.buckets] == ["${project}-b", "${project}-c"]


def test_load_refuses_a_conflicting_cloud_env_key_naming_both_files(tmp_path: Path) -> None:
    d = tmp_path / "infra"
    _write(d, "a.yaml", {**SAMPLE, "cloud_env": {"FERRY_IDENTITY": "oidc"}})
    _write(d, "b.yaml", {"cloud_env": {"FERRY_IDENTITY": "header"}})
    with pytest.raises(ValueError, match=r"b\.yaml: cloud_env\.FERRY_IDENTITY = 'header' conflicts with 'oidc' "
                                         r"from .*a\.yaml"):
        load(d)


@pytest.mark.parametrize(("doc", "problem"), [
    ({"cloud_env": ["FERRY_IDENTITY=oidc"]}, "section 'cloud_env' must be a mapping"),
    ({"buckets": {"name": "b"}}, "section 'buckets' must be a list"),
])
def test_load_refuses_a_section_of_the_wrong_shape(tmp_path: Path, doc: dict[str, Any], problem: str) -> None:
    _write(tmp_path / "infra", "a.yaml", doc)
    with pytest.raises(ValueError, match=problem):
        load(tmp_path / "infra")


# -- ferry deploy --dry-run ----------------------------------------------------------------------------


def test_dry_run_shows_the_cloud_environment_and_the_bucket(tmp_path: Path) -> None:
    args = ["deploy", "--project", P, "--region", R, "--dry-run", "--bundle", str(tmp_path / "bundle")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "FERRY_IDENTITY=oidc" in flat and "FERRY_SINK=gs://demo-ferry-events" in flat
    assert "bucket_iam" in flat and "gs://demo-ferry-events" in flat
    r = CliRunner().invoke(main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["cloud_env"] == {"FERRY_IDENTITY": "oidc", "FERRY_LAUNCHER": "cloudrun",
                                "FERRY_SINK": "gs://demo-ferry-events", "FERRY_BACKLOG": "monitoring",
                                "FERRY_SECRETS": "secretmanager", "FERRY_STYX_SUBMIT_RATE": "180"}
    assert [s["kind"] for s in out["steps"]].index("bucket") < [s["kind"] for s in out["steps"]].index("function")
