"""Which launcher runs executions: Cloud Run jobs in the deployed functions (the deploy plan says so
explicitly), subprocesses in the local stack (always, whatever a function's env says)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes.gcloud import deployed_env
from ferry.bootstrap import bootstrap
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.deploy import plan
from ferry.dev import stack
from ferry.infra.model import load
from ferry.styx.launchers.cloudrun import CloudRunLauncher
from ferry.styx.launchers.local import LocalLauncher

from .conftest import T0


def test_the_deploy_plan_runs_the_tick_and_the_api_with_cloud_run_jobs(tmp_path: Path) -> None:
    functions = {s.name: deployed_env(s) for s in plan(load(), "demo", "europe-west1", tmp_path) if s.kind == "function"}
    assert functions["styx-tick"]["FERRY_LAUNCHER"] == "cloudrun"
    assert functions["api"]["FERRY_LAUNCHER"] == "cloudrun"  # halt cancels executions from the API


def test_the_local_stack_always_uses_the_local_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_LAUNCHER", "cloudrun")  # e.g. left in the shell from a cloud session
    tick = next(f for f in load().functions if f.name == "styx-tick")
    config = stack.StackConfig(home=tmp_path, extra_env={"FERRY_LAUNCHER": "cloudrun"})
    for fn in (tick, tick.model_copy(update={"env": {"FERRY_LAUNCHER": "cloudrun", "FERRY_STYX_THREADS": "4"}})):
        env = stack.function_env(config, tmp_path, "127.0.0.1:1", "127.0.0.1:2", None, fn)
        assert env["FERRY_LAUNCHER"] == "local", fn.env
    assert env["FERRY_STYX_THREADS"] == "4"  # the function's other settings still apply


@pytest.mark.parametrize(("kind", "cls"), [("local", LocalLauncher), ("cloudrun", CloudRunLauncher)])
def test_the_launcher_is_the_one_settings_name(kind, cls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K_SERVICE", "styx-tick")  # running on Cloud Run changes nothing by itself
    svc = bootstrap(Settings(store="memory", broker="memory", launcher=kind, log_dir=str(tmp_path)),
                    clock=FixedClock(T0))
    assert isinstance(svc.launcher, cls)


def test_an_unknown_launcher_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = bootstrap(Settings(store="memory", broker="memory", launcher="k8s"),  # type: ignore[arg-type]
                    clock=FixedClock(T0))
    with pytest.raises(ValueError, match="unknown launcher 'k8s'"):
        _ = svc.launcher


def test_the_deploy_plan_keeps_submissions_under_cloud_run_s_job_run_quota(tmp_path: Path) -> None:
    functions = {s.name: deployed_env(s) for s in plan(load(), "demo", "europe-west1", tmp_path) if s.kind == "function"}
    assert functions["styx-tick"]["FERRY_STYX_SUBMIT_RATE"] == "180"  # "Job run requests per minute per region"


def test_the_cloud_run_launcher_gets_the_region_s_limits_and_the_shared_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_CLOUDRUN_MAX_JOBS", "900")
    svc = bootstrap(Settings(store="memory", broker="memory", launcher="cloudrun", cloudrun_write_rate=3),
                    clock=FixedClock(T0))
    launcher = svc.launcher
    assert isinstance(launcher, CloudRunLauncher) and launcher.max_jobs == 900 and launcher.quota is not None
    assert [launcher.quota("CreateJob") for _ in range(4)] == [True, True, True, False]  # 3 a minute, all ticks
    assert len(svc.store.query("styx_rate", [])) == 3
    from ferry.styx.repository import StyxRepository

    assert StyxRepository(svc.store).expire_rate("2026-11-26T12:01") == 3  # they expire with their minute


def test_more_active_instances_than_cloud_run_runs_at_once_is_refused() -> None:
    svc = bootstrap(Settings(store="memory", broker="memory", launcher="cloudrun", styx_max_active=1500),
                    clock=FixedClock(T0))
    with pytest.raises(ValueError, match="FERRY_CLOUDRUN_MAX_RUNNING=1000"):
        _ = svc.launcher


def test_an_idle_grace_shorter_than_the_lost_submission_window_is_refused() -> None:
    svc = bootstrap(Settings(store="memory", broker="memory", launcher="cloudrun", cloudrun_idle_grace_s=200,
                             styx_submission_lost_s=120), clock=FixedClock(T0))
    with pytest.raises(ValueError, match="FERRY_CLOUDRUN_IDLE_GRACE_S=200"):
        _ = svc.launcher
