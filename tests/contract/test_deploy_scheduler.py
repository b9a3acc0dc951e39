"""The deploy plan's scheduler jobs through the real CloudSchedulerClient, against a local fake of the
Cloud Scheduler gRPC service built from the library's own request/response types (tests/fakes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.cloud import scheduler_v1

from fakes.sample_infra import SAMPLE
from fakes.scheduler import serve
from ferry.deploy import Applier, plan
from ferry.deploy.planning import function_url
from ferry.infra.model import Infra, load

P, R = "proj-1", "europe-west1"
URLS = {"api": "https://api-x-ew.a.run.app", "tick": "https://tick-x-ew.a.run.app",
        "deliver": "https://deliver-x-ew.a.run.app"}


@pytest.fixture
def scheduler():  # type: ignore[no-untyped-def]
    with serve() as (fake, client):
        yield fake, client


def _jobs(infra: Infra, tmp_path: Path, urls=URLS):  # type: ignore[no-untyped-def]
    return [s for s in plan(infra, P, R, tmp_path, urls=urls) if s.kind == "scheduler_job"]


def test_jobs_are_stored_with_oidc_cron_zone_url_and_body_then_unchanged(scheduler, tmp_path: Path) -> None:
    fake, client = scheduler
    (step,) = _jobs(Infra.model_validate(SAMPLE), tmp_path)
    assert Applier(scheduler=client).apply(step).action == "created"

    job = fake.jobs[f"projects/{P}/locations/{R}/jobs/styx-tick"]
    assert job.schedule == "* * * * *" and job.time_zone == "Europe/Stockholm"
    assert job.attempt_deadline.total_seconds() == 320
    t = job.http_target
    assert t.uri == "https://tick-x-ew.a.run.app/tick"
    assert t.http_method == scheduler_v1.HttpMethod.POST
    assert json.loads(t.body) == {"source": "scheduler"}
    assert t.headers["Content-Type"] == "application/json"
    assert t.oidc_token.service_account_email == f"ferry-scheduler@{P}.iam.gserviceaccount.com"
    assert t.oidc_token.audience == function_url(P, R, "tick")  # the function's FERRY_AUDIENCES
    assert not t.oauth_token.service_account_email

    calls = len(fake.calls)
    assert Applier(scheduler=client).apply(step).action == "unchanged"
    assert fake.calls[calls:] == ["GetJob"]


def test_a_changed_schedule_is_updated_with_a_field_mask(scheduler, tmp_path: Path) -> None:
    fake, client = scheduler
    Applier(scheduler=client).apply(_jobs(Infra.model_validate(SAMPLE), tmp_path)[0])
    changed = {**SAMPLE, "scheduler_jobs": [{**SAMPLE["scheduler_jobs"][0], "schedule": "*/5 * * * *"}]}
    outcome = Applier(scheduler=client).apply(_jobs(Infra.model_validate(changed), tmp_path)[0])
    assert (outcome.action, outcome.detail) == ("updated", "schedule")
    job = fake.jobs[f"projects/{P}/locations/{R}/jobs/styx-tick"]
    assert job.schedule == "*/5 * * * *"
    assert job.http_target.oidc_token.audience == function_url(P, R, "tick")
    # a moved function URL updates the target (its OIDC audience stays the configured one)
    outcome = Applier(scheduler=client).apply(
        _jobs(Infra.model_validate(changed), tmp_path, {**URLS, "tick": "https://tick-new.a.run.app"})[0])
    assert (outcome.action, outcome.detail) == ("updated", "http_target")
    assert fake.jobs[job.name].http_target.uri == "https://tick-new.a.run.app/tick"
    assert fake.jobs[job.name].http_target.oidc_token.audience == function_url(P, R, "tick")


def test_every_job_of_the_repository_infra_deploys(scheduler, tmp_path: Path) -> None:
    fake, client = scheduler
    infra = load()
    steps = _jobs(infra, tmp_path, urls={})
    assert {Applier(scheduler=client).apply(s).action for s in steps} <= {"created"}
    assert len(fake.jobs) == len(infra.scheduler_jobs)
    for job in fake.jobs.values():
        assert job.http_target.oidc_token.service_account_email.endswith(".iam.gserviceaccount.com")
    assert {Applier(scheduler=client).apply(s).action for s in steps} <= {"unchanged"}
