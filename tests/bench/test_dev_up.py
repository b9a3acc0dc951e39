"""Benchmark: ``ferry dev up`` time to ready and the resident memory of the whole stack.

Two deployments: the repository's infra/ as it is, and a synthetic one with 8 HTTP functions (what
the full Ferry deployment approaches) to show how startup scales with the number of functions.
Figures are printed (``make bench`` runs with -s); aim: ready in < 30 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from ferry.dev import processes
from ferry.dev import stack as stack_mod
from ferry.dev.harness import ferry_executable
from ferry.infra import model

pytestmark = [pytest.mark.bench, pytest.mark.emulator]


def _synthetic_infra(directory: Path, functions: int) -> Path:
    directory.mkdir()
    (directory / "bench.yaml").write_text(yaml.safe_dump({
        "service_accounts": [{"name": "ferry-api"}],
        "functions": [{"name": "api" if i == 0 else f"api-{i}", "entry_point": "api", "service_account": "ferry-api"}
                      for i in range(functions)],
    }))
    return directory


@pytest.mark.parametrize("deployment", ["infra/", "8 functions"])
def test_dev_up_time_to_ready_and_memory(deployment: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**{k: v for k, v in os.environ.items()
              if k not in ("FERRY_API", "FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")}, "FERRY_HOME": str(home)}
    args = [ferry_executable(), "dev", "up", "--json"]
    if deployment == "infra/":
        n_functions = len(model.load().functions)
    else:
        n_functions = 8
        args += ["--infra", str(_synthetic_infra(tmp_path / "infra", n_functions))]
    t0 = time.monotonic()
    up = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    try:
        t1 = time.monotonic()
        httpx.get(state["api_url"] + "/v1/endpoints", timeout=60).raise_for_status()
        first_call = time.monotonic() - t1
        by_component = {}
        for c in state["components"]:
            pids = processes.group_members([c["pid"]])[c["pid"]] if c.get("pid") else []
            by_component[c["name"]] = processes.rss_bytes(pids)
        total = processes.rss_bytes(stack_mod.stack_pids(state))
        pss = processes.pss_bytes(stack_mod.stack_pids(state))
    finally:
        t2 = time.monotonic()
        down = subprocess.run([ferry_executable(), "dev", "down"], env=env, capture_output=True, text=True, timeout=120)
        down_s = time.monotonic() - t2
    assert down.returncode == 0, down.stderr
    mb = 1024 * 1024
    fn_rss = [v for k, v in by_component.items() if k not in ("pubsub", "firestore", "scheduler")]
    print(f"\n[bench] ferry dev up ({deployment}: {n_functions} function(s), {len(state['components'])} components)")
    print(f"[bench]   time to ready: {wall:.2f} s wall (CLI included), {state['ready_seconds']:.2f} s in up() "
          f"(aim < 30 s on 2 cores)")
    print(f"[bench]   first API call (cold Firestore client): {first_call * 1000:.0f} ms; ferry dev down: {down_s:.2f} s")
    print(f"[bench]   resident memory of the whole stack: {total / mb:.0f} MB "
          f"(emulators {(by_component.get('pubsub', 0) + by_component.get('firestore', 0)) / mb:.0f} MB, "
          f"functions {sum(fn_rss) / mb:.0f} MB = {sum(fn_rss) / max(1, len(fn_rss)) / mb:.0f} MB each, "
          f"scheduler {by_component.get('scheduler', 0) / mb:.0f} MB); "
          f"PSS (shared pages once): {pss / mb:.0f} MB")
    # 60 s on an idle machine; a loaded one gets its load factor
    assert wall < 60 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)), f"dev up took {wall:.1f}s"
