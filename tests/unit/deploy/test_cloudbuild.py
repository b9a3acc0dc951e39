from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from ferry.cli import main
from ferry.infra.model import DEFAULT_DIR

REPO = Path(__file__).resolve().parents[3]
BUILD = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())


def _script(step: dict) -> str:
    assert step["entrypoint"] == "bash" and step["args"][0] == "-ceu"
    return str(step["args"][1])


def _substitute(text: str) -> str:
    for key, value in {**BUILD["substitutions"], "PROJECT_ID": "my-project"}.items():
        text = text.replace("${" + key + "}", value).replace("$" + key, value)
    return text


def test_lint_then_test_then_deploy() -> None:
    ids = [s["id"] for s in BUILD["steps"]]
    assert ids == ["install", "lint", "test", "deploy"]
    steps = {s["id"]: s for s in BUILD["steps"]}
    assert "make lint" in _script(steps["lint"])
    assert "make test" in _script(steps["test"])
    assert all(s.get("waitFor") is None for s in BUILD["steps"]), "steps must run in sequence"


def test_the_test_step_has_the_emulators_and_refuses_to_skip_them() -> None:
    test = next(s for s in BUILD["steps"] if s["id"] == "test")
    script = _script(test)
    for package in ("google-cloud-cli-pubsub-emulator", "google-cloud-cli-firestore-emulator", "openjdk-17"):
        assert package in script
    assert "FERRY_REQUIRE_EMULATORS=1" in test["env"]
    assert _substitute(test["name"]).startswith("gcr.io/google.com/cloudsdktool/google-cloud-cli:")


def test_deploy_uses_the_repository_infra_and_parses_as_a_ferry_command() -> None:
    deploy = next(s for s in BUILD["steps"] if s["id"] == "deploy")
    argv = shlex.split(_substitute(_script(deploy)).strip())
    assert argv[0].endswith("ferry") and argv[1] == "deploy"
    ctx = main.get_command(None, "deploy").make_context("deploy", argv[2:])  # type: ignore[union-attr]
    assert ctx.params["project"] == "my-project"
    assert ctx.params["region"] == BUILD["substitutions"]["_REGION"]
    assert not ctx.params["dry_run"]
    assert (REPO / ctx.params["infra_dir"]).resolve() == DEFAULT_DIR.resolve()
