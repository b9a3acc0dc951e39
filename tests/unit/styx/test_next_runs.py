"""When does it run next, and how did it go (issue 18.5): ``ferry get workflows`` (within 80 columns,
names whole), ``ferry get workflow NAME`` and the web view's workflow list."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import yaml
from click.testing import CliRunner

from fakes.api_server import served
from ferry.cli import main
from ferry.styx.cli import next_run_text

from .conftest import apply, workflow

LONG = "a" * 20 + ".b_" + "c" * 40  # 63 characters, the longest a name may be


def run(url: str, *args: str):
    return CliRunner().invoke(main, [*args, "--api", url], catch_exceptions=False)


def test_get_workflows_shows_the_next_run_within_80_columns_without_cutting_names(svc, clock, tick) -> None:
    apply(svc, workflow("agg"), workflow(LONG, owner="team-with-a-rather-long-name", schedule="*/15 * * * *"),
          workflow("off", enabled=False))
    with served(svc) as url:
        human = run(url, "get", "workflows")
        data = json.loads(run(url, "get", "workflows", "--json").stdout)
    assert human.exit_code == 0, human.output
    lines = human.stdout.splitlines()
    assert all(len(ln) <= 80 for ln in lines), "\n".join(lines)
    assert any(LONG in ln for ln in lines) and any("agg" in ln for ln in lines)
    items = {i["metadata"]["name"]: i for i in data["items"]}
    # T0 is 12:00:30; hourly "agg" fires at 13:00 for 12:00; "off" has none
    assert items["agg"]["status"]["next_run"] == "2026-11-26T13:00:00+00:00"
    assert items["agg"]["status"]["next_parameter"] == "2026-11-26T12"
    assert items["off"]["status"]["next_run"] is None
    assert items["agg"]["status"]["generation"] == 1  # still the status every object has


def test_get_workflow_shows_its_next_run_and_last_runs(svc, clock, tick, launcher, styx) -> None:
    apply(svc, workflow("agg", retry={"max_tries": 1, "initial_backoff": "PT1M", "max_backoff": "PT1M"}))
    clock.set(clock.now().replace(hour=15, minute=0, second=5))
    tick()  # 12, 13, 14 triggered and launched
    launcher.finish(launcher.launched[0], 0)
    launcher.finish(launcher.launched[1], 3)
    tick()
    with served(svc) as url:
        one = run(url, "get", "workflow", "agg")
    assert one.exit_code == 0, one.output
    doc = yaml.safe_load(one.stdout)
    assert doc["kind"] == "Workflow" and doc["status"]["next_run"] == "2026-11-26T16:00:00+00:00"
    last = doc["status"]["last_runs"]
    assert [(r["parameter"], r["state"]) for r in last] == [
        ("2026-11-26T14", "RUNNING"), ("2026-11-26T13", "ERROR"), ("2026-11-26T12", "DONE")]
    assert one.stdout.index("spec:") < one.stdout.index("status:")


def test_next_run_text() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert next_run_text(None, now) == "off"
    assert next_run_text((now + timedelta(minutes=42, seconds=5)).isoformat(), now) == "in 42m"
    assert next_run_text((now + timedelta(hours=3, minutes=5)).isoformat(), now) == "in 3h05m"
    assert next_run_text((now + timedelta(days=2, hours=1)).isoformat(), now) == "in 2d"
    assert next_run_text((now - timedelta(minutes=1)).isoformat(), now) == "due"
