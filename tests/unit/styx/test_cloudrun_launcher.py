"""The Cloud Run launcher through the real run_v2 clients, against a local fake of the Run v2 gRPC API."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fakes.run_v2 import FakeRunV2
from ferry.errors import NotFound
from ferry.styx.launchers import LaunchSpec
from ferry.styx.launchers.cloudrun import CloudRunLauncher, job_id


@pytest.fixture
def fake():
    f = FakeRunV2()
    f.start()
    yield f
    f.stop()


@pytest.fixture
def launcher(fake) -> CloudRunLauncher:
    jobs, executions, tasks = fake.clients()
    return CloudRunLauncher("proj", "europe-west1", jobs, executions, tasks)


def spec(**kw) -> LaunchSpec:
    base = dict(workflow="Aggregate_Plays", parameter="2026-11-26T14", execution_id="agg-1", image="img:1",
                command=["python", "-m", "agg"], args=["--hour", "2026-11-26T14"],
                env={"MODE": "full", "FERRY_PARAMETER": "2026-11-26T14"}, timeout=timedelta(minutes=30),
                cpu="2", memory="1Gi", service_account="job@proj.iam.gserviceaccount.com")
    return LaunchSpec(**{**base, **kw})


def test_job_id_is_valid() -> None:
    assert job_id("Aggregate_Plays.v2") == "styx-aggregate-plays-v2"
    assert len(job_id("x" * 100)) <= 49


def test_launch_creates_the_job_and_runs_it_with_overrides(fake, launcher) -> None:
    launched = launcher.launch(spec())
    name = "projects/proj/locations/europe-west1/jobs/styx-aggregate-plays"
    job = fake.jobs[name]
    container = job.template.template.containers[0]
    assert container.image == "img:1" and list(container.command) == ["python", "-m", "agg"]
    assert dict(container.resources.limits) == {"cpu": "2", "memory": "1Gi"}
    assert job.template.template.service_account == "job@proj.iam.gserviceaccount.com"
    assert job.template.template.max_retries == 0
    run = fake.runs[0]
    override = run.overrides.container_overrides[0]
    assert list(override.args) == ["--hour", "2026-11-26T14"]
    assert {e.name: e.value for e in override.env} == {"MODE": "full", "FERRY_PARAMETER": "2026-11-26T14",
                                                       "FERRY_EXECUTION_ID": "agg-1"}
    assert run.overrides.timeout.seconds == 1800
    assert launched.handle.startswith(name + "/executions/") and launched.log_uri.startswith("https://")


def test_job_is_ensured_once_and_updated_on_change(fake, launcher) -> None:
    launcher.launch(spec())
    launcher.launch(spec(args=["x"]))
    assert fake.calls.count("CreateJob") == 1 and fake.calls.count("GetJob") == 1
    fresh = CloudRunLauncher("proj", "europe-west1", *fake.clients())
    fresh.launch(spec(image="img:2"))
    assert fake.calls.count("UpdateJob") == 1
    assert fake.jobs["projects/proj/locations/europe-west1/jobs/styx-aggregate-plays"] \
        .template.template.containers[0].image == "img:2"


def test_find_pages_through_the_job_s_executions_newest_first(fake, launcher) -> None:
    first = launcher.launch(spec(execution_id="agg-first"))
    for n in range(150):  # two pages of ListExecutions
        launcher.launch(spec(execution_id=f"agg-{n}"))
    found = launcher.find("Aggregate_Plays", "agg-first")
    assert found is not None and found.handle == first.handle
    assert fake.calls.count("ListExecutions") == 2
    newest = launcher.find("Aggregate_Plays", "agg-149")
    assert newest is not None and fake.calls.count("ListExecutions") == 3  # found on the first page


def test_unknown_execution_is_not_found(launcher) -> None:
    with pytest.raises(NotFound):
        launcher.poll("projects/proj/locations/europe-west1/jobs/x/executions/nope")


def test_the_tick_runs_a_workflow_on_cloud_run(fake, launcher) -> None:
    from datetime import UTC, datetime

    from fakes.styx_launcher import FakeDatamon
    from ferry.bootstrap import in_memory
    from ferry.clock import FixedClock
    from ferry.domain.manifests import Workflow
    from ferry.styx import machine as m
    from ferry.styx.service import StyxService
    from ferry.styx.tick import Tick, TickLimits

    svc = in_memory(FixedClock(datetime(2026, 11, 26, 12, tzinfo=UTC)), launcher=launcher, datamon=FakeDatamon())
    svc.apply.apply([Workflow.model_validate({"kind": "Workflow", "metadata": {"name": "agg", "owner": "t"},
                                              "spec": {"schedule": "hourly", "image": "img", "args": ["{}"]}})],
                    svc.clock.now())
    styx = StyxService(svc)
    styx.trigger("agg", "2026-11-01T00", svc.clock.now())
    Tick(svc, TickLimits()).run(svc.clock.now())
    run = styx.instance("agg", "2026-11-01T00")
    assert run.state == m.State.SUBMITTED and run.log_uri.startswith("https://")
    fake.finish(run.handle, 0)
    Tick(svc, TickLimits()).run(svc.clock.now())
    assert styx.instance("agg", "2026-11-01T00").state == m.State.DONE
