"""``ferry get resources [NAME]``: the manifests as for any kind, plus usage; a missing one exits 3."""

from __future__ import annotations

import json

from click.testing import CliRunner

from fakes.api_server import served
from ferry.cli import main

from .conftest import apply, resource, workflow


def at(clock, hh: int, mm: int = 0, ss: int = 0) -> None:
    clock.set(clock.now().replace(hour=hh, minute=mm, second=ss))


def run(url: str, *args: str):
    return CliRunner().invoke(main, [*args, "--api", url], catch_exceptions=False)


def test_get_resources_shows_manifests_with_usage(svc, clock, tick) -> None:
    apply(svc, resource("gpu", 2), resource("db", 5), resource("idle", 1),
          *(workflow(f"w{i}", resources=["gpu", "db"]) for i in range(3)))
    at(clock, 13, 0, 5)
    assert tick().submitted == 2  # gpu admits 2 of the 3
    with served(svc) as url:
        listed = run(url, "get", "resources", "--json")
        core = run(url, "get", "workflows", "--json")
        human = run(url, "get", "resources")
        one = run(url, "get", "resources", "gpu", "--json")
        missing = run(url, "get", "resources", "nope")
        missing_json = run(url, "get", "resource", "nope", "--json")
    assert listed.exit_code == 0, listed.output
    body = json.loads(listed.stdout)
    assert set(body) == set(json.loads(core.stdout)) == {"items"}  # the shape of every kind
    items = {i["metadata"]["name"]: i for i in body["items"]}
    assert set(items) == {"gpu", "db", "idle"}
    gpu = items["gpu"]
    assert gpu["kind"] == "Resource" and gpu["spec"] == {"concurrency": 2} and gpu["status"]["generation"] == 1
    assert gpu["usage"]["in_use"] == 2 and gpu["usage"]["concurrency"] == 2
    assert len(gpu["usage"]["holders"]) == 2 and all(h.startswith("w") for h in gpu["usage"]["holders"])
    assert items["db"]["usage"]["in_use"] == 2 and items["idle"]["usage"] == {"in_use": 0, "concurrency": 1,
                                                                               "holders": []}
    assert human.exit_code == 0
    header = human.output.splitlines()[1]
    for column in ("NAME", "OWNER", "CONCURRENCY", "IN USE", "HOLDERS"):
        assert column in header, human.output
    assert json.loads(one.stdout) == gpu
    assert missing.exit_code == 3 and "Resource 'nope' not found" in missing.output
    assert missing_json.exit_code == 3 and json.loads(missing_json.stdout)["error"]["code"] == "not_found"


def test_get_resources_owner_filter(svc) -> None:
    apply(svc, {**resource("a", 1), "metadata": {"name": "a", "owner": "team-a"}},
          {**resource("b", 1), "metadata": {"name": "b", "owner": "team-b"}})
    with served(svc) as url:
        out = run(url, "get", "resources", "--owner", "team-b", "--json")
    assert [i["metadata"]["name"] for i in json.loads(out.stdout)["items"]] == ["b"]
