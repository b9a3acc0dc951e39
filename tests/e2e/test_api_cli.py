"""End to end: the real `ferry` CLI against a real functions-framework API process on the emulators."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ferry.dev.harness import run_cli

pytestmark = pytest.mark.emulator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "manifests"
BIN = Path(sys.executable).parent
ADA = "ada@example.com"  # in the examples' admins team
PIA = "pia@example.com"  # admin of team-playback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Api:
    url: str
    env: dict[str, str]
    log: Path

    def ferry(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli([*args] + (["--as", user] if user else []), env=self.env, timeout=60, cwd=ROOT)

    def ok(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        out = self.ferry(*args, user=user)
        assert out.returncode == 0, f"ferry {' '.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr}"
        return out

    def json(self, *args: str, user: str | None = None) -> dict:
        return json.loads(self.ok(*args, "--json", user=user).stdout)

    def names(self, plural: str) -> list[str]:
        return [i["metadata"]["name"] for i in self.json("get", plural)["items"]]

    def stored(self, plural: str) -> list[str]:
        """Names straight from the API (``ferry get resources`` shows Styx's usage view instead)."""
        items = httpx.get(f"{self.url}/v1/{plural}", params={"limit": 1000}, timeout=30).json()["items"]
        return [i["metadata"]["name"] for i in items]


@pytest.fixture(scope="module")
def api(emulators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One API function process (functions-framework) on the emulators, with its own project."""
    port = _free_port()
    logs = tmp_path_factory.mktemp("api")
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": emulators.firestore, "PUBSUB_EMULATOR_HOST": emulators.pubsub,
           "GOOGLE_CLOUD_PROJECT": f"e2e-{uuid.uuid4().hex[:10]}", "FERRY_STORE": "firestore",
           "FERRY_BROKER": "pubsub", "FERRY_HOME": str(logs / ".ferry"), "FERRY_SINK": f"file://{logs}/sink",
           "FERRY_LOG_DIR": str(logs / "logs"), "PYTHONUNBUFFERED": "1"}
    env.pop("FERRY_USER", None)
    url = f"http://127.0.0.1:{port}"
    log_path = logs / "api.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "functions-framework"), "--target", "api", "--source", str(ROOT / "functions" / "main.py"),
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the API process exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the API did not become ready in 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Api(url, {**env, "FERRY_API": url}, log_path)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def applied(api: Api) -> dict:
    """The examples, applied once (as a Ferry admin)."""
    return api.json("apply", "-f", str(EXAMPLES), user=ADA)


def test_apply_examples_and_get_them(api, applied):
    n = applied["counts"]["created"]
    assert n >= 12 and applied["counts"]["changed"] == applied["counts"]["unchanged"] == 0
    # (subsystems may derive more, e.g. the endpoint events.play of the event type)
    assert {"plays-5m", "plays-hourly", "royalties-daily"} <= set(api.names("endpoints"))
    assert sorted(api.names("workflows")) == ["aggregate-plays", "count-plays-5m", "royalty-statements", "top-tracks"]
    assert api.names("eventtypes") == ["play"]
    assert "admins" in api.names("teams")
    one = api.json("get", "endpoint", "royalties-daily")
    assert one["spec"]["timezone"] == "Europe/Stockholm" and one["status"]["generation"] == 1
    table = api.ok("get", "workflows").stdout
    assert "aggregate-plays" in table and "*/5 * * * *" in table
    human = api.ok("get", "Endpoint", "plays-hourly").stdout  # a manifest, in the language's field order
    assert human.startswith("apiVersion: ferry/v1\nkind: Endpoint\nmetadata:\n  name: plays-hourly\n"), human
    assert human.index("spec:") < human.index("status:")
    owned = api.json("get", "endpoints", "--owner", "team-royalties")
    assert [i["metadata"]["name"] for i in owned["items"]] == ["royalties-daily"]


def test_second_apply_changes_nothing(api, applied):
    again = api.json("apply", "-f", str(EXAMPLES))  # anonymous is fine: nothing changes
    assert again["counts"] == {"created": 0, "changed": 0, "unchanged": applied["counts"]["created"]}
    human = api.ok("apply", "-f", str(EXAMPLES)).stdout
    assert "0 created, 0 changed" in human


def test_invalid_file_in_a_directory_applies_nothing(api, applied, tmp_path):
    (tmp_path / "a-good.yaml").write_text(
        "kind: Resource\nmetadata: {name: never-applied}\nspec: {concurrency: 3}\n")
    (tmp_path / "b-bad.yaml").write_text(
        "kind: Endpoint\nmetadata: {name: bad-one, owner: team-playback}\nspec: {partitioning: sometimes}\n---\n"
        "kind: Workflow\nmetadata: {name: Bad}\nspec: {schedule: hourly}\n")
    out = api.ferry("apply", "-f", str(tmp_path))
    assert out.returncode == 3, out.stderr
    for expected in ("b-bad.yaml[0] Endpoint/bad-one spec.partitioning", "b-bad.yaml[1]", "metadata.name",
                     "metadata.owner", "spec.image", "nothing was applied"):
        assert expected in out.stderr, out.stderr
    assert "never-applied" not in api.stored("resources")
    assert "bad-one" not in api.names("endpoints")


def test_dry_run_counts(api, applied, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("kind: Endpoint\nmetadata: {name: dry-a, owner: team-e2e}\nspec: {partitioning: PT5M}\n---\n"
                    "kind: Endpoint\nmetadata: {name: dry-b, owner: team-e2e}\nspec: {partitioning: PT5M}\n")
    plan = api.json("apply", "-f", str(path), "--dry-run")
    assert plan["dry_run"] and plan["counts"] == {"created": 2, "changed": 0, "unchanged": 0}
    assert "dry-a" not in api.names("endpoints")
    assert "dry run: nothing written" in api.ok("apply", "-f", str(path), "--dry-run").stdout
    api.ok("apply", "-f", str(path))
    path.write_text(path.read_text().replace("dry-b, owner: team-e2e}\nspec: {partitioning: PT5M}",
                                             "dry-b, owner: team-e2e}\nspec: {partitioning: PT15M}"))
    plan = api.json("apply", "-f", str(path), "--dry-run")
    assert plan["counts"] == {"created": 0, "changed": 1, "unchanged": 1}
    assert {c["name"]: c["action"] for c in plan["changes"]} == {"dry-a": "unchanged", "dry-b": "changed"}
    assert api.json("get", "endpoint", "dry-b")["spec"]["partitioning"] == "PT5M"


def test_schema(api):
    schema = json.loads(api.ok("schema", "eventtypes").stdout)
    assert schema["title"] == "Ferry EventType"
    assert api.ferry("schema", "gadgets").returncode == 2


def test_delete(api, applied, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("kind: Endpoint\nmetadata: {name: short-lived, owner: team-e2e}\nspec: {}\n")
    api.ok("apply", "-f", str(path))
    assert api.json("delete", "endpoint", "short-lived") == {"deleted": {"kind": "Endpoint", "name": "short-lived"}}
    missing = api.ferry("get", "endpoint", "short-lived")
    assert missing.returncode == 3 and "not found" in missing.stderr
    assert api.ferry("delete", "endpoint", "short-lived").returncode == 3


def test_ownership(api, applied, tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("kind: Endpoint\nmetadata: {name: pia-owned, owner: team-playback}\nspec: {partitioning: daily}\n")
    api.ok("apply", "-f", str(path), user=PIA)
    path.write_text(path.read_text().replace("daily", "hourly"))
    refused = api.ferry("apply", "-f", str(path), user="eve@example.com")
    assert refused.returncode == 5 and "not a member" in refused.stderr
    assert api.ferry("apply", "-f", str(path)).returncode == 5  # anonymous: who is asking?
    assert api.ferry("delete", "endpoint", "pia-owned", user="eve@example.com").returncode == 5
    assert api.json("get", "endpoint", "pia-owned")["spec"]["partitioning"] == "daily"
    api.ok("apply", "-f", str(path), user="per@example.com")  # a member
    assert api.json("get", "endpoint", "pia-owned")["status"]["generation"] == 2
    api.ok("delete", "endpoint", "pia-owned", user=ADA)  # a Ferry admin


def test_api_error_model_over_http(api):
    resp = httpx.post(f"{api.url}/v1/apply", json={"manifests": [], "bogus": 1})
    assert resp.status_code == 422
    assert resp.json()["error"]["details"] == [{"field": "bogus", "reason": "unknown field"}]
    doc = httpx.get(f"{api.url}/v1/openapi.json").json()
    assert "/v1/apply" in doc["paths"]
