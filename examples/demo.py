"""``make demo``: the local stack end to end, through the real ``ferry`` CLI.

Brings the stack up (in a temporary FERRY_HOME, so a stack you run in ./.ferry is left alone), applies
the example manifests, shows the ``ferry get`` tables, fires a scheduler job and shows the scheduler's
log line, and always brings the stack down again — also when a step fails (exit code 1 then).

Subsystems add their part as one more step function::

    @step("Datamon: a late partition raises an alert")
    def datamon(demo: Demo) -> None:
        demo.ferry("evaluate")
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent


def _bold(text: str) -> str:
    return f"\033[1m{text}\033[0m" if sys.stdout.isatty() else text


@dataclass
class Demo:
    home: Path
    env: dict[str, str]
    timings: list[tuple[str, float]] = field(default_factory=list)

    def ferry(self, *args: str, check: bool = True, show: bool = True,
              input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``ferry ARGS`` against the demo stack, echoing the command and its output."""
        exe = BIN / "ferry"
        if show:
            print(f"$ ferry {' '.join(args)}", flush=True)
        out = subprocess.run([str(exe if exe.exists() else "ferry"), *args], env=self.env, cwd=ROOT,
                             capture_output=True, text=True, input=input, timeout=300)
        if show:
            sys.stdout.write(out.stdout)
            sys.stderr.write(out.stderr)
            sys.stdout.flush()
        if check and out.returncode != 0:
            raise RuntimeError(f"`ferry {' '.join(args)}` exited with {out.returncode}")
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.ferry(*args, "--json", show=False).stdout)

    @property
    def state(self) -> dict[str, Any]:
        return json.loads((self.home / "state.json").read_text())


Step = Callable[[Demo], None]
STEPS: list[tuple[str, Step]] = []


def step(title: str) -> Callable[[Step], Step]:
    """Register a demo step (they run in the order they are declared)."""
    def add(fn: Step) -> Step:
        STEPS.append((title, fn))
        return fn
    return add


# --------------------------------------------------------------------------------------------- steps


@step("Start the local stack: emulators, one functions-framework process per function, scheduler")
def start_stack(demo: Demo) -> None:
    demo.ferry("dev", "up")
    demo.ferry("dev", "status")


@step("Apply the example manifests")
def apply_examples(demo: Demo) -> None:
    path = EXAMPLES / "manifests" if (EXAMPLES / "manifests").is_dir() else EXAMPLES
    demo.ferry("apply", "-f", str(path.relative_to(ROOT)))


@step("What is declared: ferry get endpoints / workflows / eventtypes / resources")
def show_tables(demo: Demo) -> None:
    for kind in ("endpoints", "workflows", "eventtypes", "resources"):
        demo.ferry("get", kind)


@step("The local scheduler fires a job of infra/ the way Cloud Scheduler does")
def fire_scheduler_job(demo: Demo) -> None:
    scheduler = next((c for c in demo.state["components"] if c["kind"] == "scheduler"), None)
    jobs = scheduler.get("jobs", []) if scheduler else []
    if not jobs:
        print("(infra/ declares no scheduler jobs yet)")
        return
    job = jobs[0]
    demo.ferry("dev", "fire", job)
    log = Path(scheduler["log"])  # type: ignore[index]
    lines = [line for line in log.read_text().splitlines() if f'"job": "{job}"' in line]
    print(f"scheduler log ({log}):")
    print(f"  {lines[-1]}")
    demo.ferry("dev", "status")



@step("Datamon: an endpoint goes late — one incident, delivered to the owning team's channels (the local "
      "receiver); it lands, the incident resolves")
def datamon_late_alert_resolves(demo: Demo) -> None:
    import re
    from datetime import UTC, datetime, timedelta

    import httpx

    receiver_url = demo.state["receiver_url"]
    secrets = demo.home / "secrets"  # what Secret Manager holds in the cloud
    secrets.mkdir(exist_ok=True)
    (secrets / "team-datamon--demo-pagerduty").write_text("0123456789abcdef0123456789abcdef")
    (secrets / "team-datamon--demo-slack").write_text(f"{receiver_url}/slack/team-datamon")
    (secrets / "team-datamon--demo-webhook").write_text(f"{receiver_url}/webhook/team-datamon")
    start = (datetime.now(UTC) - timedelta(minutes=4)).replace(second=0, microsecond=0)
    manifest = (EXAMPLES / "datamon" / "late-endpoint.yaml").read_text()
    manifest = re.sub(r"start: .*", f"start: {start.strftime('%Y-%m-%dT%H:%M:%SZ')}", manifest)
    path = demo.home / "late-endpoint.yaml"
    path.write_text(manifest)
    demo.ferry("apply", "-f", str(path), "--as", "ada@example.com")
    seen: set[int] = set()

    def show_received(want: int) -> None:
        """What the channels received (the local receiver's record), waiting for ``want`` new posts."""
        deadline = time.monotonic() + 30
        while True:
            items = httpx.get(f"{receiver_url}/_received", timeout=10).json()["items"]
            fresh = [(i, r) for i, r in enumerate(items) if i not in seen and "demo-late-minutes" in json.dumps(r["body"])]
            if len(fresh) >= want or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for i, r in fresh:
            seen.add(i)
            body = r["body"]
            what = (body.get("event_action"), (body.get("payload") or {}).get("summary") or body.get("summary")
                    or body.get("text") or f"dedup_key {body.get('dedup_key')}")
            print(f"  receiver: POST {r['path']} -> {r['status']}  {what[0] or ''} {str(what[1])[:110]}")

    demo.ferry("evaluate")
    show_received(3)  # critical: PagerDuty, Slack and the webhook
    demo.ferry("alerts", "--owner", "team-datamon")
    incident = demo.json("alerts", "--owner", "team-datamon")["items"][0]
    # Land every minute from the oldest late one to a few minutes ahead: the last landing resolves it.
    t = datetime.strptime(incident["oldest"], "%Y-%m-%dT%H:%M").replace(tzinfo=UTC)
    while t <= datetime.now(UTC) + timedelta(minutes=3):
        demo.ferry("land", "demo-late-minutes", t.strftime("%Y-%m-%dT%H:%M"), "--records", "1000", "--allow-future",
                   "--as", "ada@example.com", show=t.strftime("%Y-%m-%dT%H:%M") == incident["oldest"])
        t += timedelta(minutes=1)
    demo.ferry("evaluate")
    show_received(3)
    demo.ferry("status", "--owner", "team-datamon")
    from ferry.dev import stack as stack_mod

    url = stack_mod.function_urls(demo.state).get("dashboard")
    print(f"dashboard: {url}/?owner=team-datamon  (open it while the stack runs: `ferry dev up`)")
    print(f"channel receiver: {receiver_url}/_received  (also {demo.home}/receiver/received.jsonl)")


@step("Styx: a minutely workflow runs naturally, a backfill, one failure retried, the timeline")
def styx_workflows(demo: Demo) -> None:
    from datetime import UTC, datetime, timedelta

    job = ROOT / "examples" / "styx" / "job.py"
    manifest = (ROOT / "examples" / "styx" / "workflows.yaml").read_text().replace(
        "examples/styx/job.py", str(job))
    path = demo.home / "styx-workflows.yaml"
    path.write_text(manifest)
    demo.ferry("apply", "-f", str(path), "--as", "ada@example.com")  # a Resource is an admins' shared pool

    def tick_until(done: Callable[[], bool], now: datetime | None = None, seconds: float = 40) -> None:
        if now is not None:
            demo.env["FERRY_NOW"] = now.isoformat()  # local time travel (the stack allows it)
        try:
            deadline = time.monotonic() + seconds
            while not done() and time.monotonic() < deadline:
                demo.ferry("tick", show=False)
                time.sleep(0.5)
        finally:
            demo.env.pop("FERRY_NOW", None)

    def states(wf: str) -> list[str]:
        return [i["state"] for i in demo.json("instances", wf)["items"]]

    # the scheduler ticks every minute; here two minutes pass at once
    tick_until(lambda: "DONE" in states("demo-styx-minutely"), datetime.now(UTC) + timedelta(minutes=2))
    demo.ferry("instances", "demo-styx-minutely")
    bf = demo.json("backfill", "create", "demo-styx-flaky", "2026-11-01", "2026-11-04", "--concurrency", "2",
                   "-d", "demo backfill", "--as", "ada@example.com")  # changes are made by someone
    tick_until(lambda: demo.json("backfill", "show", bf["id"])["state"] == "done")
    demo.ferry("backfill", "show", bf["id"])
    demo.ferry("timeline", "demo-styx-flaky", "2026-11-01")
    demo.ferry("logs", "demo-styx-flaky", "2026-11-01", "--as", "ada@example.com")  # its team or an admin
    demo.ferry("get", "resources")


@step("Gabo: events through ingest (some invalid), delivered, a PT1M partition closed and landed, "
      "and the Styx workflow that waited for it runs")
def gabo_events_to_closed_partition(demo: Demo) -> None:
    from datetime import UTC, datetime, timedelta

    # team-playback is a declared team (examples/manifests/teams.yaml): its objects change as a member.
    demo.ferry("apply", "-f", str(EXAMPLES / "gabo" / "eventtype.yaml"), "--as", "pia@example.com")
    # A minutely workflow with depends_on: [events.demo-click] (the endpoint the type's apply registered);
    # its job reads the closed minute through FERRY_INPUTS (examples/gabo/count_clicks.py, path made absolute:
    # a local execution runs in the stack's working directory).
    workflow = (EXAMPLES / "gabo" / "workflow.yaml").read_text().replace(
        "examples/gabo/count_clicks.py", str(EXAMPLES / "gabo" / "count_clicks.py"))
    (demo.home / "gabo-workflow.yaml").write_text(workflow)
    demo.ferry("apply", "-f", str(demo.home / "gabo-workflow.yaml"), "--as", "pia@example.com")
    sent = datetime.now(UTC)
    sent_out = demo.ferry("send", "demo-click", str(EXAMPLES / "gabo" / "events.ndjson"), check=False)
    if sent_out.returncode != 3:  # one event of the file breaks the schema on purpose: exit 3, the rest go through
        raise RuntimeError(f"`ferry send` exited with {sent_out.returncode}, expected 3 (one event rejected)")
    # The minute of these events ends within 60 s; here it passes at once (local time travel).
    later = sent + timedelta(seconds=75)
    demo.env["FERRY_NOW"] = later.isoformat()
    try:
        demo.ferry("deliver", "demo-click")
        # darkload: 0.1 — the sampled events' shadow stream, delivered and closed apart into darkload/
        demo.ferry("deliver", "demo-click", "--darkload")
        demo.env["FERRY_NOW"] = (later + timedelta(seconds=20)).isoformat()
        # --inline: merged in the API process (a handful of events); the scheduler's close orders the
        # close-shard function instead.
        closed = demo.json("close", "demo-click", "--inline")
        demo.ferry("close", "demo-click", show=False)
    finally:
        demo.env.pop("FERRY_NOW", None)
    mine = [c for c in closed["reports"][0]["closed"] if c["events"]]
    if not mine:
        raise RuntimeError(f"no partition with events closed: {closed}")
    for c in mine:
        marker = Path(c["location"].removeprefix("file://")) / "_SUCCESS"
        print(f"{marker}:")
        print(marker.read_text())
    print("quarantined (rejected by ingest, kept on gabo-demo-click-quarantine with their reason): see above")
    demo.ferry("get", "endpoints", "events.demo-click")
    # the shadow's closed partition against the sampled events of the primary's, id by id
    demo.ferry("darkload", "report", "demo-click", "--partition", mine[0]["partition"])
    # the delivered events as a table: closed periods only, typed columns from the type's schema
    demo.ferry("query", "SELECT user_id, count(*) AS events FROM events.demo_click GROUP BY 1 ORDER BY 1")

    # The landing starts the dependent workflow: its instance for the same minute (a minutely cron's
    # parameter is the PT1M partition's name) passes its gate and runs on the next Styx ticks.
    partition = mine[0]["partition"]
    print(f"$ ferry tick   (until demo-click-counter {partition} is done; the clock runs on from the close)")
    ticking, deadline = time.monotonic(), time.monotonic() + 90
    state = None
    while state != "DONE":
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo-click-counter {partition} did not run: {state}")
        virtual = later + timedelta(seconds=20 + time.monotonic() - ticking)
        demo.env["FERRY_NOW"] = virtual.isoformat()
        try:
            demo.ferry("tick", show=False)
        finally:
            demo.env.pop("FERRY_NOW", None)
        items = demo.json("instances", "demo-click-counter")["items"]
        state = next((i["state"] for i in items if i["parameter"] == partition), None)
        if state != "DONE":
            time.sleep(0.5)
    demo.ferry("instances", "demo-click-counter")
    demo.ferry("timeline", "demo-click-counter", partition)
    demo.ferry("logs", "demo-click-counter", partition, "--as", "pia@example.com")  # its team reads its logs
    demo.ferry("evaluate", show=False)  # Datamon's manifest sync picks up the endpoint the type registered
    demo.ferry("status", "--owner", "team-playback", check=False)


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    home = Path(os.environ.get("FERRY_DEMO_HOME") or tempfile.mkdtemp(prefix="ferry-demo-"))
    drop = ("FERRY_API", "FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")
    env = {**{k: v for k, v in os.environ.items() if k not in drop}, "FERRY_HOME": str(home)}
    demo = Demo(home, env)
    started = time.monotonic()
    failed: str | None = None
    try:
        for i, (title, fn) in enumerate(STEPS, 1):
            print(f"\n{_bold(f'== {i}. {title}')}", flush=True)
            t0 = time.monotonic()
            fn(demo)
            demo.timings.append((title, time.monotonic() - t0))
    except Exception as exc:  # report which step failed, then still bring the stack down
        failed = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        print(f"\n{_bold('== Stop the local stack')}", flush=True)
        down = demo.ferry("dev", "down", check=False)
        if down.returncode != 0:
            failed = failed or "`ferry dev down` failed"
    total = time.monotonic() - started
    print()
    for title, seconds in demo.timings:
        print(f"  {seconds:6.1f}s  {title}")
    if failed:
        print(f"\nDEMO FAILED after {total:.0f}s: {failed} (logs under {home / 'logs'})", file=sys.stderr)
        return 1
    print(f"\ndemo finished in {total:.0f}s; stack stopped (logs kept under {home / 'logs'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
