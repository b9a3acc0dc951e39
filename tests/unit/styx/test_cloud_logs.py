"""``ferry logs`` of a Cloud Run execution: the launcher reads Cloud Logging through the library's own
LoggingServiceV2 client, against a local fake of the gRPC service (``tests/fakes/cloud_logging.py``)."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from click.testing import CliRunner

from fakes.api_server import served
from fakes.cloud_logging import FakeLogging
from fakes.run_v2 import FakeRunV2
from ferry.cli import main
from ferry.errors import InfraError
from ferry.styx.launchers.cloudrun import CloudRunLauncher

from .conftest import apply, workflow

P = "2026-11-01T00"


@pytest.fixture
def logging_fake():
    f = FakeLogging()
    f.start()
    yield f
    f.stop()


@pytest.fixture
def run_fake():
    f = FakeRunV2()
    f.start()
    yield f
    f.stop()


@pytest.fixture
def cloud(run_fake, logging_fake) -> CloudRunLauncher:
    jobs, executions, tasks = run_fake.clients()
    return CloudRunLauncher("proj", "europe-west1", jobs, executions, tasks, logging_client=logging_fake.client())


def test_logs_asks_for_the_execution_and_returns_its_entries_oldest_first(logging_fake) -> None:
    launcher = CloudRunLauncher("proj", "europe-west1", logging_client=logging_fake.client())
    logging_fake.add("styx-agg-x1", "first")
    logging_fake.add("styx-agg-other", "not mine")
    logging_fake.add("styx-agg-x1", json={"message": "second", "severity": "INFO"})
    logging_fake.add("styx-agg-x1", json={"rows": 3})
    logging_fake.add("styx-agg-x1", "from another job", job="styx-other")
    handle = "projects/proj/locations/europe-west1/jobs/styx-agg/executions/styx-agg-x1"
    lines = launcher.logs(handle)
    assert [line.split(" ", 1)[1] for line in lines] == ["first", "second", "{'rows': 3.0}"]
    assert lines[0].startswith("2026-11-26T12:00:00")
    req = logging_fake.requests[-1]
    assert list(req.resource_names) == ["projects/proj"] and req.order_by == "timestamp desc"
    assert 'resource.type="cloud_run_job"' in req.filter
    assert 'labels."run.googleapis.com/execution_name"="styx-agg-x1"' in req.filter
    assert 'resource.labels.job_name="styx-agg"' in req.filter
    assert 'resource.labels.location="europe-west1"' in req.filter


def test_logs_keeps_the_last_lines_across_pages(logging_fake) -> None:
    launcher = CloudRunLauncher("proj", "europe-west1", logging_client=logging_fake.client())
    for i in range(25):
        logging_fake.add("styx-agg-x1", f"line {i}")
    lines = launcher.logs("projects/proj/locations/europe-west1/jobs/styx-agg/executions/styx-agg-x1", limit=12)
    assert [line.split(" ", 1)[1] for line in lines] == [f"line {i}" for i in range(13, 25)]
    assert logging_fake.requests[-1].page_size == 12


def test_cloud_logging_refusal_is_an_infra_error(logging_fake) -> None:
    launcher = CloudRunLauncher("proj", "europe-west1", logging_client=logging_fake.client())
    logging_fake.fail_with = grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(InfraError, match="Cloud Logging.*PERMISSION_DENIED"):
        launcher.logs("projects/proj/locations/europe-west1/jobs/styx-agg/executions/styx-agg-x1")
    assert len(logging_fake.requests) == 1  # not retried


def test_unreachable_cloud_logging_is_retried_briefly_then_an_infra_error(logging_fake) -> None:
    launcher = CloudRunLauncher("proj", "europe-west1", logging_client=logging_fake.client())
    launcher.logs_timeout = 1.0
    logging_fake.stop()
    started = time.monotonic()
    with pytest.raises(InfraError, match="Cloud Logging"):
        launcher.logs("projects/proj/locations/europe-west1/jobs/styx-agg/executions/styx-agg-x1")
    assert time.monotonic() - started < 10


def test_ferry_logs_prints_the_cloud_run_execution_entries(clock, datamon, cloud, run_fake, logging_fake) -> None:
    from ferry.bootstrap import in_memory
    from ferry.styx.tick import Tick, TickLimits

    svc = in_memory(clock, launcher=cloud, datamon=datamon)  # what the API's StyxService launches with
    apply(svc, workflow("agg"))
    styx = svc.styx
    styx.trigger("agg", P, svc.clock.now())
    Tick(svc.styx, TickLimits()).run(svc.clock.now())
    run = styx.instance("agg", P)
    execution = run.handle.rsplit("/", 1)[-1]
    job = run.handle.split("/")[5]  # styx-agg-<digest of the workflow and its container>
    logging_fake.add(execution, "job: started", job=job)
    logging_fake.add(execution, json={"message": "job: exiting 0"}, job=job)
    logging_fake.add(f"{job}-someone-else", "not this one", job=job)
    with served(svc) as url:
        result = CliRunner().invoke(main, ["logs", "agg", P, "--api", url], catch_exceptions=False)
        as_json = CliRunner().invoke(main, ["logs", "agg", P, "--api", url, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "job: started" in result.output and "job: exiting 0" in result.output
    assert "not this one" not in result.output
    assert result.output.index("job: started") < result.output.index("job: exiting 0")
    assert f'labels."run.googleapis.com/execution_name"="{execution}"' in logging_fake.requests[-1].filter
    body = json.loads(as_json.stdout)
    assert body["execution_id"] == run.execution_id and len(body["lines"]) == 2
