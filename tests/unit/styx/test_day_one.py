"""Day-one fixes, each a regression test: the CLI in-process against the API router on fakes.

``ferry logs --execution`` finds an id the timeline shows; ``ferry logs --follow``; ``ferry instances
--state ERROR`` across workflows; apply refuses unknown endpoints; ``land`` refuses a partition whose
period has not ended; a backfill before an endpoint's start is refused with the valid range.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from click.testing import CliRunner

from fakes.api_server import served
from fakes.styx_launcher import FakeLauncher
from ferry.bootstrap import in_memory
from ferry.cli import main
from ferry.datamon import landing
from ferry.errors import BadRequest, ValidationError
from ferry.styx import backfills
from ferry.styx import machine as m
from ferry.styx.tick import Tick, TickLimits

from .conftest import apply, workflow

P = "2026-11-26T12"


def at(clock, hh: int, mm: int = 0, ss: int = 0) -> None:
    clock.set(clock.now().replace(hour=hh, minute=mm, second=ss))


def run(url: str, *args: str):
    return CliRunner().invoke(main, [*args, "--api", url], catch_exceptions=False)


def endpoint(name: str, owner: str = "team-a", **spec):
    return {"apiVersion": "ferry/v1", "kind": "Endpoint", "metadata": {"name": name, "owner": owner},
            "spec": {"partitioning": "hourly", **spec}}


class GrowingLogs(FakeLauncher):
    """Executions whose log grows while they run."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, list[str]] = {}

    def logs(self, handle: str, limit: int = 200) -> list[str]:
        return list(self.lines.get(handle, [f"log of {handle}"]))[-limit:]


def test_logs_of_an_earlier_execution_the_timeline_shows(svc, clock, tick, launcher, styx) -> None:
    apply(svc, workflow("agg"))
    at(clock, 13, 0, 5)
    tick()
    launcher.finish(launcher.launched[0], 20)  # no try spent: retried in 10 minutes
    tick()
    clock.advance(timedelta(minutes=10))
    tick()
    executions = styx.timeline("agg", P)["triggers"][0]["executions"]
    first, second = (x["execution_id"] for x in executions)
    with served(svc) as url:
        earlier = run(url, "logs", "agg", P, "--execution", first, "--json")
        latest = run(url, "logs", "agg", P, "--json")
        unknown = run(url, "logs", "agg", P, "--execution", "no-such-id")
    assert earlier.exit_code == 0, earlier.output
    assert json.loads(earlier.stdout)["execution_id"] == first
    assert json.loads(earlier.stdout)["lines"] == ["log of exec-1"]
    assert json.loads(latest.stdout)["execution_id"] == second
    assert json.loads(latest.stdout)["lines"] == ["log of exec-2"]
    assert unknown.exit_code == 3 and "no execution no-such-id" in unknown.output


def test_logs_follow_prints_new_lines_until_the_instance_ends(clock, datamon) -> None:
    launcher = GrowingLogs()
    svc = in_memory(clock, launcher=launcher, datamon=datamon)
    styx = svc.styx

    def tick() -> None:
        Tick(svc.styx, TickLimits(max_active=100)).run(svc.clock.now())
    apply(svc, workflow("agg"))
    at(clock, 13, 0, 5)
    tick()
    launcher.lines["exec-1"] = ["starting"]
    polls = threading.Event()
    original = launcher.logs

    def logs(handle: str, limit: int = 200) -> list[str]:
        out = original(handle, limit)
        polls.set()
        return out
    launcher.logs = logs  # type: ignore[method-assign]

    def finish_later() -> None:
        assert polls.wait(10)
        launcher.lines["exec-1"] += ["working", "done"]
        launcher.finish(launcher.launched[0], 0)
        tick()
    worker = threading.Thread(target=finish_later)
    worker.start()
    with served(svc) as url:
        out = run(url, "logs", "agg", P, "--follow", "--interval", "0.05")
    worker.join(10)
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].startswith("# ") and "exec" in lines[0]
    assert lines[1:] == ["starting", "working", "done"]  # each once, in order
    assert styx.instance("agg", P).state == m.State.DONE


def test_instances_in_error_across_workflows_of_an_owner(svc, clock, tick, launcher) -> None:
    apply(svc, workflow("a1"), workflow("a2"), workflow("b1", owner="team-b"))
    at(clock, 13, 0, 5)
    tick()
    by_wf = {s.workflow: s for s in launcher.launched}
    launcher.finish(by_wf["a1"], 50)
    launcher.finish(by_wf["a2"], 0)
    launcher.finish(by_wf["b1"], 50)
    tick()
    with served(svc) as url:
        mine = run(url, "instances", "--state", "ERROR", "--owner", "team-a", "--json")
        every = run(url, "instances", "--state", "error", "--json")
        table = run(url, "instances", "--state", "ERROR")
        bad = run(url, "instances", "--state", "BROKEN")
    assert mine.exit_code == 0, mine.output
    assert [(i["workflow"], i["parameter"], i["exit_code"]) for i in json.loads(mine.stdout)["items"]] == \
        [("a1", P, 50)]
    assert sorted(i["workflow"] for i in json.loads(every.stdout)["items"]) == ["a1", "b1"]
    assert "WORKFLOW" in table.output and "a1" in table.output and "b1" in table.output
    assert bad.exit_code == 3 and "unknown state" in bad.output


def test_apply_refuses_unknown_endpoints_but_not_those_of_the_same_apply(svc) -> None:
    with pytest.raises(ValidationError) as err:
        apply(svc, workflow("w", depends_on=["nope-in", "events.nope"], produces="nope-out"),
              endpoint("e", upstream=["nope-up"]))
    reasons = json.dumps(err.value.details)
    for name in ("nope-in", "events.nope", "nope-out", "nope-up"):
        assert f"endpoint '{name}' does not exist" in reasons
    assert err.value.exit_code == 3 and svc.manifests.get("Workflow", "w") is None
    # Declared in the same apply (an EventType declares events.<name>), or stored earlier: fine.
    event_type = {"apiVersion": "ferry/v1", "kind": "EventType", "metadata": {"name": "clicks", "owner": "team-a"},
                  "spec": {}}
    apply(svc, endpoint("raw"), event_type,
          workflow("w", depends_on=["raw", "events.clicks"], produces="out"), endpoint("out", upstream=["raw"]))
    apply(svc, workflow("w2", depends_on=["out", "events.clicks"]))


def test_land_refuses_a_partition_whose_period_has_not_ended(svc, clock) -> None:
    apply(svc, endpoint("plays", start="2026-11-26T00:00:00Z"))
    now = clock.now()  # 12:00:30
    with pytest.raises(ValidationError) as err:
        landing.land(svc.store, "plays", "2026-11-26T12", now=now)
    assert "has not ended yet" in err.value.message and "--allow-future" in err.value.message
    assert landing.land(svc.store, "plays", "2026-11-26T11", now=now)["relanded"] is False
    assert landing.land(svc.store, "plays", "2026-11-26T12", now=now, allow_future=True)["relanded"] is False
    with served(svc) as url:
        refused = run(url, "land", "plays", "2026-11-26T13")
        forced = run(url, "land", "plays", "2026-11-26T13", "--allow-future", "--json")
    assert refused.exit_code == 3 and "has not ended yet" in refused.output
    assert forced.exit_code == 0 and json.loads(forced.stdout)["partition"] == "2026-11-26T13"


def test_backfill_before_an_endpoints_start_is_refused_with_the_valid_range(svc, clock, styx) -> None:
    apply(svc, endpoint("up", start="2026-11-20T06:00:00Z"), endpoint("out", partitioning="daily"),
          workflow("w", depends_on=["up"], produces="out"))
    now = clock.now()
    with pytest.raises(BadRequest) as err:
        backfills.create(styx, "w", "2026-11-20T04", "2026-11-20T10", now)
    assert "valid range begins at 2026-11-20T06" in err.value.message and "up" in err.value.message
    assert err.value.details["valid_start"] == "2026-11-20T06"
    with pytest.raises(BadRequest):
        backfills.create(styx, "w", "2026-11-20T04", "2026-11-20T10", now, reverse=True)
    assert backfills.create(styx, "w", "2026-11-20T06", "2026-11-20T10", now)["total"] == 4
