"""Job isolation on Cloud Run (issue 18): no execution ever runs with another workflow's image, command,
resources or service account — whatever the names, however many launchers interleave, and when a
workflow's container changes under a launcher that has already launched it.

The real run_v2 clients against the fake; every execution's recorded template (its job's, with the
run's overrides, as Cloud Run records it) is checked against the spec that launched it."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from fakes.run_v2 import FakeRunV2
from ferry.styx.launchers import LaunchSpec
from ferry.styx.launchers.cloudrun import CloudRunLauncher

LONG = "x" * 50
NAMES = ["team.daily", "team-daily", "team_daily", "Team_Daily",   # differ only in . - _ and case
         LONG + "-alpha-ingest", LONG + "-beta-ingest", LONG + ".alpha.ingest"]  # share 50 characters


def _spec(workflow: str, n: int, version: int = 1) -> LaunchSpec:
    i = NAMES.index(workflow) if workflow in NAMES else 99
    return LaunchSpec(workflow=workflow, parameter=f"p{n}", execution_id=f"{i}-{n}-v{version}",
                      image=f"registry/team{i}/job:{version}", command=["run", f"team{i}"],
                      args=[f"--n={n}"], env={"FERRY_WORKFLOW": workflow}, timeout=timedelta(minutes=10),
                      cpu=str(1 + i % 2), memory=f"{512 * (1 + i % 3)}Mi",
                      service_account=f"team{i}@proj.iam.gserviceaccount.com",
                      labels={"ferry-workflow": f"wf{i}"})


@pytest.fixture
def fake():
    f = FakeRunV2()
    f.start()
    yield f
    f.stop()


def _check_every_execution(fake: FakeRunV2, launched: dict[str, LaunchSpec]) -> int:
    """Each execution ran with exactly its own spec's image, command, resources and service account."""
    checked = 0
    for name, ex in fake.executions.items():
        c = ex.template.containers[0]
        env = {e.name: e.value for e in c.env}
        want = launched[env["FERRY_EXECUTION_ID"]]
        assert env["FERRY_WORKFLOW"] == want.workflow
        assert (c.image, list(c.command), list(c.args)) == (want.image, want.command, want.args), name
        assert dict(c.resources.limits) == {"cpu": want.cpu, "memory": want.memory}, name
        assert ex.template.service_account == want.service_account, name
        checked += 1
    return checked


def test_names_that_differ_only_in_punctuation_or_share_50_characters_get_their_own_jobs(fake) -> None:
    launcher = CloudRunLauncher("proj", "europe-west1", *fake.clients())
    launched = {}
    for wf in NAMES:
        s = _spec(wf, 0)
        launcher.launch(s)
        launched[s.execution_id] = s
    assert len(fake.jobs) == len(NAMES)  # one job each
    assert all(len(n.rsplit("/", 1)[1]) <= 49 for n in fake.jobs)
    assert _check_every_execution(fake, launched) == len(NAMES)


def test_two_launchers_interleaving_while_containers_change_never_mix_workflows(fake) -> None:
    """Two launcher instances (each its own clients, its own memory), 8 threads, 7 workflows whose names
    collide under the old naming; half-way every workflow gets a new image through the second launcher
    first — the first launcher, which has launched the old image, then launches the new one."""
    a = CloudRunLauncher("proj", "europe-west1", *fake.clients())
    b = CloudRunLauncher("proj", "europe-west1", *fake.clients())
    rng = random.Random(18)
    launched: dict[str, LaunchSpec] = {}
    counter = itertools.count()

    def launch(launcher: CloudRunLauncher, s: LaunchSpec) -> None:
        launched[s.execution_id] = s
        launcher.launch(s)

    with ThreadPoolExecutor(8) as pool:
        for version, first, second in ((1, a, b), (2, b, a)):
            jobs = [(rng.choice((first, second)), _spec(wf, next(counter), version)) for wf in NAMES for _ in range(6)]
            rng.shuffle(jobs)
            # the version's first launch of each workflow goes through ``first``
            for wf in NAMES:
                s = _spec(wf, next(counter), version)
                launch(first, s)
            list(pool.map(lambda job: launch(*job), jobs))
    assert len(fake.executions) == len(launched) == 2 * len(NAMES) * 7
    assert _check_every_execution(fake, launched) == len(launched)
    assert len(fake.jobs) == 2 * len(NAMES)  # a job per workflow and container; none ever updated
    assert fake.count("UpdateJob") == 0


_OTHER_PROCESS = """
import sys
sys.path[:0] = [{here!r}, {tests!r}, {shared!r}]
from test_cloudrun_isolation import _spec, NAMES
from fakes.run_v2 import clients_for
from ferry.styx.launchers.cloudrun import CloudRunLauncher
launcher = CloudRunLauncher("proj", "europe-west1", *clients_for({address!r}))
for n in range(3):
    for wf in NAMES:
        launcher.launch(_spec(wf, 1000 + 10 * NAMES.index(wf) + n, version=int(sys.argv[1])))
"""


def test_two_launcher_processes_interleaving_never_mix_workflows(fake, tmp_path: Path) -> None:
    """Two OS processes launching the same colliding names, one with version 1 containers and one with
    version 2, at the same time; then this process (which has seen neither) launches both versions."""
    here = Path(__file__).parent
    script = tmp_path / "launch.py"
    script.write_text(_OTHER_PROCESS.format(here=str(here), tests=str(here.parents[1]),
                                               shared=str(here.parents[2] / "shared"), address=fake.address))
    procs = [subprocess.Popen([sys.executable, str(script), str(v)], cwd=here) for v in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    mine = CloudRunLauncher("proj", "europe-west1", *fake.clients())
    launched = {}
    for v in (1, 2):
        for n in range(3):
            for wf in NAMES:
                s = _spec(wf, 1000 + 10 * NAMES.index(wf) + n, version=v)
                launched[s.execution_id] = s
        for wf in NAMES:
            s = replace(_spec(wf, 5000 + NAMES.index(wf), version=v), execution_id=f"mine-{wf}-{v}")
            mine.launch(s)
            launched[s.execution_id] = s
    assert len(fake.executions) == 2 * 4 * len(NAMES)
    assert _check_every_execution(fake, launched) == len(fake.executions)
