"""Partition repair: invalidate a landed partition, re-run everything downstream of it in dependency
order, and the operator's tools (get partitions, backfill retry, retry -e). In-memory store, the real
Datamon landing and evaluator, the real tick, a fake launcher; the CLI in-process over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from fakes.api_server import served
from fakes.styx_launcher import FakeLauncher
from ferry.bootstrap import Services, in_memory
from ferry.cli import main
from ferry.clock import FixedClock
from ferry.datamon import evaluation, landing, partitions, views
from ferry.errors import Forbidden
from ferry.styx import backfills, reprocessing
from ferry.styx import machine as m
from ferry.styx.tick import Tick, TickLimits

from .conftest import apply, workflow

T0 = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)
WEEK = [f"2026-11-{d}" for d in range(19, 26)]
DAY = "2026-11-22"


def endpoint(name: str, owner: str = "team-a") -> dict:
    return {"apiVersion": "ferry/v1", "kind": "Endpoint", "metadata": {"name": name, "owner": owner},
            "spec": {"partitioning": "daily", "start": "2026-11-19T00:00:00Z", "sla": {"error_after": "PT1H"}}}


def run(url: str, *args: str, user: str = "alice"):
    return CliRunner().invoke(main, [*args, "--api", url, "--as", user], catch_exceptions=False)


class Chain:
    """a -> wf1 -> b -> wf2 -> c, daily, owned by team-a (alice), a week of it landed."""

    def __init__(self) -> None:
        self.clock = FixedClock(T0)
        self.launcher = FakeLauncher()
        self.svc: Services = in_memory(self.clock, launcher=self.launcher)
        self.styx = self.svc.styx
        apply(self.svc, {"kind": "Team", "metadata": {"name": "team-a"}, "spec": {"members": ["alice"]}},
              endpoint("a"), endpoint("b"), endpoint("c"),
              workflow("wf1", schedule="daily", depends_on=["a"], produces="b"),
              workflow("wf2", schedule="daily", depends_on=["b"], produces="c"), actor="alice")
        for d in WEEK:
            landing.land(self.svc.store, "a", d, now=self.now())
        for wf in ("wf1", "wf2"):
            backfills.create(self.styx, wf, WEEK[0], "2026-11-26", self.now(), concurrency=7, actor="alice")
        self.drain()
        assert landing.landed(self.svc.store, "c", WEEK) == set(WEEK)

    def now(self) -> datetime:
        return self.clock.now()

    def tick(self) -> None:
        self.clock.advance(timedelta(minutes=2))  # past the gate's re-check delay
        Tick(self.svc.styx, TickLimits(max_active=100)).run(self.now())

    def drain(self, rounds: int = 12) -> None:
        """Tick, finishing every running execution with exit 0, until nothing runs or waits."""
        for _ in range(rounds):
            self.tick()
            for spec in self.launcher.running():
                self.launcher.finish(spec, 0)


@pytest.fixture
def chain() -> Chain:
    return Chain()


def test_invalidate_then_reprocess_downstream_in_dependency_order(chain: Chain) -> None:
    svc, styx = chain.svc, chain.styx
    before = {e: svc.store.get("datamon_partitions", f"{e}@{DAY}")["landed_at"] for e in ("b", "c")}
    with pytest.raises(Forbidden):
        partitions.invalidate(svc.store, svc.authorizer, "a", DAY, reason="bad", actor="mallory", now=chain.now())
    inv = partitions.invalidate(svc.store, svc.authorizer, "a", DAY, reason="duplicated rows from the source", actor="alice",
                                now=chain.now())
    assert inv["invalidated"] is True and inv["by"] == "alice" and inv["previous"]["landings"] == 1
    assert landing.landed(svc.store, "a", [DAY]) == set()
    evaluated = evaluation.evaluate(svc.store, svc.publisher, now=chain.now())
    assert evaluated["states"].get("late") == 1  # a's day is late again (its owner's view; notified as
    # any late partition, unless it was due before the endpoint was registered: history, see docs)
    row = views.status(svc.store, now=chain.now())["endpoints"]
    assert {r["endpoint"]: r["state"] for r in row}["a"] == "late"

    from ferry.web.app import respond

    status, _, html = respond(svc, "GET", "/endpoints/a", {}, {})
    assert status == 200 and f'data-partition="{DAY}" data-state="late"' in html
    assert "invalidated by alice: duplicated rows from the source" in html

    launched_before = len(chain.launcher.launched)
    rp = reprocessing.create(styx, "a", DAY, "2026-11-23", chain.now(), actor="alice")
    assert [w["workflow"] for w in rp["workflows"]] == ["wf1", "wf2"]
    assert landing.landed(svc.store, "b", [DAY]) == set() and landing.landed(svc.store, "c", [DAY]) == set()
    chain.drain(3)
    assert len(chain.launcher.launched) == launched_before  # both wait: A's day has not re-landed
    assert "a " + DAY in styx.instance("wf1", DAY).message

    landing.land(svc.store, "a", DAY, now=chain.now())  # the producer lands the fixed partition
    chain.tick()
    new = chain.launcher.launched[launched_before:]
    assert [(s.workflow, s.parameter) for s in new] == [("wf1", DAY)]  # wf2 still waits for B
    chain.tick()
    assert len(chain.launcher.launched) == launched_before + 1
    chain.launcher.finish(new[0], 0)
    chain.drain(4)
    new = chain.launcher.launched[launched_before:]
    assert [(s.workflow, s.parameter) for s in new] == [("wf1", DAY), ("wf2", DAY)]
    after = {e: svc.store.get("datamon_partitions", f"{e}@{DAY}")["landed_at"] for e in ("b", "c")}
    assert after["b"] > before["b"] and after["c"] > after["b"]  # re-landed, B first
    shown = reprocessing.show(styx, rp["id"])
    assert shown["state"] == "done" and [(w["workflow"], w["finished"], w["total"]) for w in shown["workflows"]] == \
        [("wf1", 1, 1), ("wf2", 1, 1)]
    for wf in ("wf1", "wf2"):
        assert styx.instance(wf, DAY).backfill == rp["workflows"][0 if wf == "wf1" else 1]["backfill"]
        assert styx.instance(wf, DAY).state == m.State.DONE


def test_cli_get_partitions_invalidate_and_reprocessing(chain: Chain) -> None:
    with served(chain.svc) as url:
        listed = run(url, "get", "partitions", "a", "--from", "2026-11-21", "--to", "2026-11-24", "--json")
        table = run(url, "get", "partitions", "a")
        bad = run(url, "invalidate", "a", DAY, "--reason", "wrong currency", user="mallory")
        done = run(url, "invalidate", "a", DAY, "--reason", "wrong currency", "--json")
        again = run(url, "invalidate", "a", DAY, "--reason", "wrong currency")
        rp = run(url, "backfill", "create", "--downstream-of", "a", DAY, "2026-11-23", "--json")
        shown = run(url, "backfill", "show", json.loads(rp.stdout)["id"])
        usage = run(url, "backfill", "create", "--downstream-of", "a", DAY)
    assert listed.exit_code == 0, listed.output
    assert [i["partition"] for i in json.loads(listed.stdout)["items"]] == ["2026-11-23", "2026-11-22", "2026-11-21"]
    assert "2026-11-19" in table.output and "PARTITION" in table.output
    assert bad.exit_code == 5
    assert json.loads(done.stdout)["invalidated"] is True and json.loads(done.stdout)["by"] == "alice"
    assert again.exit_code == 0 and "nothing to invalidate" in again.output
    assert rp.exit_code == 0, rp.output
    assert [w["workflow"] for w in json.loads(rp.stdout)["workflows"]] == ["wf1", "wf2"]
    assert "wf1" in shown.output and "wf2" in shown.output
    assert usage.exit_code == 3


def test_backfill_retry_and_retry_with_env(chain: Chain) -> None:
    svc, styx = chain.svc, chain.styx
    bf = backfills.create(styx, "wf2", WEEK[0], WEEK[2], chain.now(), concurrency=2, actor="alice")
    chain.tick()
    for spec in chain.launcher.running():
        chain.launcher.finish(spec, 50)
    chain.tick()
    assert backfills.show(styx, bf["id"])["counts"] == {"ERROR": 2}
    with served(svc) as url:
        retried = run(url, "backfill", "retry", bf["id"], "--json")
        env = run(url, "retry", "wf1", WEEK[3], "-e", "MODE=fix", "-e", "X=1", "--json")
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["retried"] == WEEK[:2]
    assert all(styx.instance("wf2", d).state == m.State.QUEUED for d in WEEK[:2])
    assert env.exit_code == 0, env.output
    out = json.loads(env.stdout)
    assert out["trigger"]["type"] == "retry" and out["trigger"]["env"] == {"MODE": "fix", "X": "1"}
    chain.tick()
    spec = next(s for s in chain.launcher.launched if s.workflow == "wf1" and s.parameter == WEEK[3]
                and s.env.get("MODE") == "fix")
    assert spec.env["X"] == "1"
    timeline = styx.timeline("wf1", WEEK[3])
    assert [t["trigger_type"] for t in timeline["triggers"]][-1] == "retry"


def test_trigger_ignore_deps_and_mark_done(chain: Chain) -> None:
    svc, styx = chain.svc, chain.styx
    partitions.invalidate(svc.store, svc.authorizer, "a", DAY, reason="bad", actor="alice", now=chain.now())
    with served(svc) as url:
        forced = run(url, "trigger", "wf1", DAY, "--ignore-deps", "--json")
        chain.tick()
        waiting = run(url, "trigger", "wf2", "2026-11-27", "--json")  # b of the 27th never landed
        chain.tick()
        gated = styx.instance("wf2", "2026-11-27").state
        refused = run(url, "mark-done", "wf2", "2026-11-27", "--reason", "x", user="mallory")
        marked = run(url, "mark-done", "wf2", "2026-11-27", "--reason", "computed by hand", "--json")
        timeline = run(url, "timeline", "wf2", "2026-11-27", "--json")
        again = run(url, "mark-done", "wf2", "2026-11-27")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["trigger"]["ignore_deps"] is True
    assert any(s.workflow == "wf1" and s.parameter == DAY for s in chain.launcher.running())  # without a
    assert waiting.exit_code == 0 and gated == m.State.QUEUED  # waits for b
    assert refused.exit_code == 5
    assert marked.exit_code == 0, marked.output
    assert json.loads(marked.stdout)["state"] == "DONE"
    assert landing.landed(svc.store, "c", ["2026-11-27"]) == {"2026-11-27"}  # its output landed
    events = [e for t in json.loads(timeline.stdout)["triggers"] for e in t["events"]]
    assert events[-1]["event"] == "markDone" and "by alice: computed by hand" in events[-1]["message"]
    assert again.exit_code == 3 and "mark-done applies to" in again.output
