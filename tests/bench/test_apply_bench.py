"""Benchmark: `ferry apply` of 10,000 manifests against the Firestore emulator, versus the raw client.

Run by `make bench`. Prints wall times, Firestore reads and writes, and the throughput ratio
ferry / raw (aim >= 0.8): the raw client does the same documents in batched writes of 500, in the same
run against the same emulator, so the ratio is what Ferry's validation, planning and bookkeeping cost.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from ferry.domain.manifests import Endpoint, Workflow
from ferry.services.apply import ApplyService, parse_documents
from ferry.services.authz import Authorizer
from ferry.store.base import MAX_BATCH
from ferry.store.firestore import FirestoreStore
from ferry.store.manifests import ManifestRepository, collection

pytestmark = [pytest.mark.bench, pytest.mark.emulator]

N = int(os.environ.get("FERRY_BENCH_MANIFESTS", "10000"))
NOW = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def manifest_docs(n: int, tag: str = "") -> list[dict]:
    """Half endpoints, half workflows, of a few owners, as users write them."""
    docs = []
    for i in range(n):
        owner = f"team-{i % 17:02d}"
        if i % 2:
            docs.append({"apiVersion": "ferry/v1", "kind": "Endpoint",
                         "metadata": {"name": f"ep-{i:05d}", "owner": owner, "labels": {"tier": str(i % 3)},
                                      "description": tag},
                         "spec": {"partitioning": ["hourly", "daily", "PT5M"][i % 3],
                                  "timezone": ["UTC", "Europe/Stockholm"][i % 2],
                                  "sla": {"warn_after": "PT2H", "error_after": "PT4H"},
                                  "upstream": [f"ep-{i - 2:05d}"] if i > 2 else []}})
        else:
            docs.append({"apiVersion": "ferry/v1", "kind": "Workflow",
                         "metadata": {"name": f"wf-{i:05d}", "owner": owner},
                         "spec": {"schedule": ["hourly", "daily", "*/5 * * * *"][i % 3], "image": f"img:{tag or 1}",
                                  "args": ["--p", "{}"], "depends_on": [f"ep-{i + 1:05d}"] if i + 1 < n else []}})
    return docs


def raw_write(project: str, records: list[tuple[str, str, dict]]) -> float:
    """The baseline: the google-cloud-firestore client, batched writes of 500, nothing else."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    client = firestore.Client(project=project, credentials=AnonymousCredentials())
    started = time.perf_counter()
    for i in range(0, len(records), MAX_BATCH):
        batch = client.batch()
        for coll, name, data in records[i:i + MAX_BATCH]:
            batch.set(client.collection(coll).document(name), data)
        batch.commit()
    return time.perf_counter() - started


def _ferry_apply(docs: list[dict]) -> tuple[float, float, FirestoreStore, ApplyService, object]:
    """Ferry: validate every document, plan against the store (one batched read), write in batches."""
    store = FirestoreStore(f"bench-ferry-{uuid.uuid4().hex[:8]}")
    repo = ManifestRepository(store)
    service = ApplyService(repo, Authorizer(repo))
    started = time.perf_counter()
    manifests = parse_documents(docs)
    validation_s = time.perf_counter() - started
    result = service.apply(manifests, NOW)
    return time.perf_counter() - started, validation_s, store, service, result


def test_apply_10k_against_raw_client(emulators):
    docs = manifest_docs(N)
    # Warm the emulator's JVM first, so that neither side pays for it; then best of two runs each,
    # alternating, on fresh projects (the machine is shared: single runs are noisy).
    raw_write(f"bench-warm-{uuid.uuid4().hex[:8]}",
              [("warmup", f"w{i}", {"i": i, "m": {"x": "y" * 50}}) for i in range(3000)])
    ferry_runs, raw_runs = [], []
    for _ in range(2):
        ferry_s, validation_s, store, service, result = _ferry_apply(docs)
        assert result.counts()["created"] == N
        ferry_runs.append((ferry_s, validation_s, store, service))
        # Raw: the very documents Ferry stored, written with the client alone.
        records = [(collection(c.record.kind), c.record.name, dict(c.record.__dict__)) for c in result.changes]
        raw_runs.append(raw_write(f"bench-raw-{uuid.uuid4().hex[:8]}", records))
    ferry_s, validation_s, store, service = min(ferry_runs, key=lambda r: r[0])
    raw_s = min(raw_runs)
    writes, reads = store.stats.writes, store.stats.reads

    # Again, unchanged: reads only.
    before = store.stats.snapshot()
    started = time.perf_counter()
    again = service.apply(parse_documents(docs), NOW)
    again_s = time.perf_counter() - started
    second = store.stats.since(before)
    assert again.counts()["unchanged"] == N and second["writes"] == 0

    ratio = raw_s / ferry_s  # = ferry throughput / raw throughput
    print(f"\n[bench] apply {N} manifests (ApplyService + FirestoreStore, emulator; best of 2)")
    print(f"[bench]   ferry apply     : {ferry_s:7.2f} s  ({N / ferry_s:7.0f} manifests/s)  "
          f"writes {writes}  reads {reads}  (validation {validation_s:.2f} s, "
          f"plan + write {ferry_s - validation_s:.2f} s)  runs {[round(r[0], 2) for r in ferry_runs]}")
    print(f"[bench]   raw batched set : {raw_s:7.2f} s  ({N / raw_s:7.0f} docs/s)       writes {N}  "
          f"runs {[round(r, 2) for r in raw_runs]}")
    print(f"[bench]   ratio ferry/raw throughput: {ratio:.2f} (aim >= 0.8)")
    print(f"[bench]   second apply (unchanged): {again_s:7.2f} s  writes {second['writes']}  reads {second['reads']}")
    assert writes == N


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_apply_10k_through_the_api(emulators, tmp_path):
    """The whole path a user takes: `ferry apply -f DIR` (YAML, HTTP) to the API function process."""
    per_file = 1000
    docs = manifest_docs(N, tag="cli")
    for f in range(0, N, per_file):
        (tmp_path / f"m{f // per_file:02d}.yaml").write_text(yaml.safe_dump_all(docs[f:f + per_file]))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GOOGLE_CLOUD_PROJECT": f"bench-cli-{uuid.uuid4().hex[:8]}", "FERRY_API": url,
           "FIRESTORE_EMULATOR_HOST": emulators.firestore, "PUBSUB_EMULATOR_HOST": emulators.pubsub,
           "FERRY_HOME": str(tmp_path / ".ferry")}
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(BIN / "functions-framework"), "--target", "api", "--source",
                             str(ROOT / "functions" / "main.py"), "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "api.log").read_text()[-2000:]
            time.sleep(0.2)
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            out = subprocess.run([str(BIN / "ferry"), "apply", "-f", str(tmp_path), "--json"], env=env,
                                 capture_output=True, text=True, timeout=600)
            timings.append(time.perf_counter() - started)
            assert out.returncode == 0, out.stderr[-2000:]
        import json

        counts = json.loads(out.stdout)["counts"]
        assert counts["unchanged"] == N
        print(f"\n[bench] ferry apply -f DIR ({N} manifests in {N // per_file} files) via the API process:")
        print(f"[bench]   first  : {timings[0]:7.2f} s  ({N / timings[0]:7.0f} manifests/s, subsystem hooks included)")
        print(f"[bench]   second : {timings[1]:7.2f} s  (unchanged: {counts['unchanged']})")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def test_models_are_what_users_write():
    docs = manifest_docs(4)
    assert [type(m) for m in parse_documents(docs)] == [Workflow, Endpoint, Workflow, Endpoint]
