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
    from fakes.run_v2 import JOB_ID

    for name in ["Aggregate_Plays.v2", "x" * 63, "9lives", "-_.", "team.daily", "a" * 200]:
        jid = job_id(name, {"workflow": name, "image": "img:1"})
        assert JOB_ID.match(jid) and len(jid) <= 49, jid
    assert job_id("Aggregate_Plays.v2", {"workflow": "Aggregate_Plays.v2"}).startswith("styx-aggregate-plays-v2-")


def test_launch_creates_the_job_and_runs_it_with_overrides(fake, launcher) -> None:
    launched = launcher.launch(spec())
    name = launcher.job_name(spec())
    assert name.startswith("projects/proj/locations/europe-west1/jobs/styx-aggregate-plays-")
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


def test_a_job_is_created_once_and_never_updated_a_new_shape_is_a_new_job(fake, launcher) -> None:
    launcher.launch(spec())
    launcher.launch(spec(args=["x"]))  # args are overrides: the same job
    assert fake.count("CreateJob") == 1 and fake.count("RunJob") == 2
    fresh = CloudRunLauncher("proj", "europe-west1", *fake.clients())
    fresh.launch(spec())  # another process: CreateJob answers ALREADY_EXISTS, the job is verified
    assert fake.count("GetJob") == 1 and len(fake.jobs) == 1
    fresh.launch(spec(image="img:2"))
    assert fake.count("UpdateJob") == 0 and len(fake.jobs) == 2
    images = {j.template.template.containers[0].image for j in fake.jobs.values()}
    assert images == {"img:1", "img:2"}
    assert fake.runs[-1].name == fresh.job_name(spec(image="img:2"))


def test_a_job_deleted_under_a_process_is_created_again(fake, launcher) -> None:
    launcher.launch(spec())
    del fake.jobs[launcher.job_name(spec())]  # evicted by another process
    launched = launcher.launch(spec(execution_id="agg-2"))
    assert launched.handle.startswith(launcher.job_name(spec()) + "/executions/")
    assert fake.count("CreateJob") == 2


def test_find_pages_through_the_job_s_executions_newest_first(fake, launcher) -> None:
    first = launcher.launch(spec(execution_id="agg-first"))
    for n in range(150):  # two pages of ListExecutions
        launcher.launch(spec(execution_id=f"agg-{n}"))
    launcher.launch(spec(execution_id="agg-other-shape", image="img:2"))  # a second job of the workflow
    launcher.launch(spec(workflow="Aggregate.Plays", execution_id="agg-first"))  # another workflow's
    before = fake.count("ListExecutions")
    found = launcher.find("Aggregate_Plays", "agg-first")
    assert found is not None and found.handle == first.handle
    assert fake.count("ListExecutions") - before <= 3  # its two jobs; never the other workflow's
    newest = launcher.find("Aggregate_Plays", "agg-149")
    assert newest is not None and newest.handle.startswith(launcher.job_name(spec()))


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
    from ferry.styx.tick import Tick, TickLimits

    svc = in_memory(FixedClock(datetime(2026, 11, 26, 12, tzinfo=UTC)), launcher=launcher, datamon=FakeDatamon())
    svc.apply.apply([Workflow.model_validate({"kind": "Workflow", "metadata": {"name": "agg", "owner": "t"},
                                              "spec": {"schedule": "hourly", "image": "img", "args": ["{}"]}})],
                    svc.clock.now())
    styx = svc.styx
    styx.trigger("agg", "2026-11-01T00", svc.clock.now())
    Tick(svc.styx, TickLimits()).run(svc.clock.now())
    run = styx.instance("agg", "2026-11-01T00")
    assert run.state == m.State.SUBMITTED and run.log_uri.startswith("https://")
    fake.finish(run.handle, 0)
    Tick(svc.styx, TickLimits()).run(svc.clock.now())
    assert styx.instance("agg", "2026-11-01T00").state == m.State.DONE
