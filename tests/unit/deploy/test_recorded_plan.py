"""`ferry deploy --dry-run` from an empty project, compared with a recorded plan (issue 21): every
prerequisite in order — APIs, service accounts and their grants, the bucket and its grants, the Firestore
database in native mode, its indexes, topics, the load balancer with Identity-Aware Proxy, functions,
invoker bindings, push subscriptions, scheduler jobs. A change to the plan shows as a diff here; when it
is meant, record it again: ``FERRY_RECORD=1 pytest tests/unit/deploy/test_recorded_plan.py``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from fakes.sample_infra import SAMPLE_WEB
from ferry.cli import main

RECORDED = Path(__file__).parent / "recorded" / "empty-project.plan.json"


def _normalized(steps: list[dict[str, Any]], bundle: str) -> list[dict[str, Any]]:
    """The plan without what changes with every commit (the bundle's digest and where it was built)."""
    text = json.dumps(steps).replace(bundle, "BUNDLE")
    text = re.sub(r"ferry-fingerprint=[0-9a-f]{16}", "ferry-fingerprint=FINGERPRINT", text)
    text = re.sub(r'"fingerprint": "[0-9a-f]{16}"', '"fingerprint": "FINGERPRINT"', text)
    return json.loads(text)  # type: ignore[no-any-return]


def test_the_dry_run_from_an_empty_project_is_the_recorded_plan(tmp_path: Path) -> None:
    infra = tmp_path / "infra"
    infra.mkdir()
    (infra / "all.yaml").write_text(yaml.safe_dump(SAMPLE_WEB))
    bundle = str(tmp_path / "bundle")
    r = CliRunner().invoke(main, ["deploy", "--project", "demo", "--region", "europe-west1", "--dry-run", "--json",
                                  "--project-number", "123456789012", "--infra", str(infra), "--bundle", bundle])
    assert r.exit_code == 0, r.output
    steps = _normalized(json.loads(r.output)["steps"], bundle)
    if os.environ.get("FERRY_RECORD"):
        RECORDED.write_text(json.dumps(steps, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(RECORDED.read_text())
    assert [(s["kind"], s["name"]) for s in steps] == [(s["kind"], s["name"]) for s in recorded]
    for got, want in zip(steps, recorded, strict=True):
        assert got == want, f"step {got['kind']} {got['name']} differs from the recording"
    kinds = [s["kind"] for s in steps]
    # what a new project needs, in order: APIs first; the database before its indexes and any function
    assert kinds[0] == "apis" and "iap.googleapis.com" in steps[0]["request"]
    assert kinds.index("database") < kinds.index("index") < kinds.index("function")
    assert kinds.index("web") < kinds.index("function")


def test_the_repository_infra_creates_the_database_and_lets_workflows_read_events(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["deploy", "--project", "demo", "--region", "europe-west1", "--dry-run", "--json",
                                  "--bundle", str(tmp_path / "bundle")])
    assert r.exit_code == 0, r.output
    steps = json.loads(r.output)["steps"]
    (db,) = [s for s in steps if s["kind"] == "database"]
    assert db["request"]["database"] == {"location_id": "europe-west1", "type_": "FIRESTORE_NATIVE",
                                         "concurrency_mode": "OPTIMISTIC"}
    assert {"bucket": "demo-ferry-events", "member": "serviceAccount:ferry-workflow@demo.iam.gserviceaccount.com",
            "role": "roles/storage.objectViewer"} in [s["request"] for s in steps if s["kind"] == "bucket_iam"]
    apis = steps[0]["request"]
    for api in ("firestore.googleapis.com", "secretmanager.googleapis.com", "monitoring.googleapis.com",
                "iamcredentials.googleapis.com", "cloudresourcemanager.googleapis.com"):
        assert api in apis
