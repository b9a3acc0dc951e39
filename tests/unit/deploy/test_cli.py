from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from fakes.sample_infra import SAMPLE
from ferry.cli import main


def _infra_dir(tmp_path: Path, doc: dict) -> Path:
    d = tmp_path / "infra"
    d.mkdir()
    (d / "all.yaml").write_text(yaml.safe_dump(doc))
    return d


def _dry_run(tmp_path: Path, *extra: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["deploy", "--project", "demo", "--region", "europe-west1", "--dry-run",
                                     "--bundle", str(tmp_path / "bundle"), *extra])


def test_dry_run_prints_the_plan_as_a_table(tmp_path: Path) -> None:
    r = _dry_run(tmp_path, "--infra", str(_infra_dir(tmp_path, SAMPLE)))
    assert r.exit_code == 0, r.output
    for word in ("apis", "service_account", "function", "push_subscription", "scheduler_job", "styx-tick",
                 "OIDC", "dead letters", "nothing changed"):
        assert word in r.output
    assert (tmp_path / "bundle" / "main.py").is_file()


def test_dry_run_json_has_every_request(tmp_path: Path) -> None:
    r = _dry_run(tmp_path, "--infra", str(_infra_dir(tmp_path, SAMPLE)), "--json", "--project-number", "99")
    assert r.exit_code == 0, r.output
    steps = json.loads(r.output)["steps"]
    job = next(s for s in steps if s["kind"] == "scheduler_job")
    assert job["request"]["job"]["http_target"]["oidc_token"]["service_account_email"] == \
        "ferry-scheduler@demo.iam.gserviceaccount.com"
    assert json.loads(job["request"]["job"]["http_target"]["body"]) == {"source": "scheduler"}
    push = next(s for s in steps if s["kind"] == "push_subscription")
    assert push["request"]["dead_letter_policy"]["max_delivery_attempts"] == 7
    fn = next(s for s in steps if s["kind"] == "function")
    assert fn["request"][:3] == ["gcloud", "functions", "deploy"]
    assert any("service-99@gcp-sa-pubsub" in json.dumps(s) for s in steps)


def test_dry_run_of_the_repository_infra(tmp_path: Path) -> None:
    r = _dry_run(tmp_path, "--json")
    assert r.exit_code == 0, r.output
    kinds = {s["kind"] for s in json.loads(r.output)["steps"]}
    assert {"apis", "service_account", "function", "topic"} <= kinds


def test_invalid_infra_exits_3_naming_the_problem(tmp_path: Path) -> None:
    bad = {**SAMPLE, "scheduler_jobs": [{**SAMPLE["scheduler_jobs"][0], "function": "nope"}]}
    r = _dry_run(tmp_path, "--infra", str(_infra_dir(tmp_path, bad)))
    assert r.exit_code == 3
    assert "unknown function 'nope'" in r.output
