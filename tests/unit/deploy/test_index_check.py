"""The session-end index check (tests/conftest_indexes.py), run on small throwaway suites."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[2]

SUITE = '''
import subprocess, sys
from ferry.store.base import Where
from ferry.store.memory import MemoryStore


def test_due_instances():
    MemoryStore().query("instances", [Where("state", "==", "waiting"), Where("due_at", "<=", 5)])


def test_a_function_in_a_subprocess_queries_too():
    code = ("from ferry.store.base import Where, record_query; "
            "record_query('alerts', [Where('open', '==', True)], 'raised_at', True)")
    subprocess.run([sys.executable, "-c", code], check=True)
'''


def _run(tmp_path: Path, indexes: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "infra").mkdir(exist_ok=True)
    (tmp_path / "infra" / "x.yaml").write_text(indexes)
    (tmp_path / "suite").mkdir(exist_ok=True)
    (tmp_path / "suite" / "conftest.py").write_text('pytest_plugins = ["conftest_indexes"]\n')
    (tmp_path / "suite" / "test_queries.py").write_text(SUITE)
    env = {k: v for k, v in os.environ.items() if k != "FERRY_QUERY_SHAPES_FILE"}
    env.update(FERRY_INFRA_DIR=str(tmp_path / "infra"),
               PYTHONPATH=os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--rootdir", str(tmp_path / "suite"), *args, str(tmp_path / "suite")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_an_undeclared_index_fails_the_session_and_says_what_to_add(tmp_path: Path) -> None:
    r = _run(tmp_path, "indexes: []\n")
    assert "2 passed" in r.stdout, r.stdout + r.stderr
    assert r.returncode == 1, r.stdout
    assert "instances: due_at <=, state ==" in r.stdout
    assert "alerts: open ==, order by raised_at desc" in r.stdout  # from the subprocess
    assert "collection: instances" in r.stdout and "field: due_at" in r.stdout


def test_under_xdist_workers_the_controller_checks_every_workers_shapes(tmp_path: Path) -> None:
    # a worker's gaps (in-process and from a subprocess) reach the controller, which fails the run
    r = _run(tmp_path, "indexes: []\n", "-n", "1")
    assert "2 passed" in r.stdout, r.stdout + r.stderr
    assert r.returncode == 1, r.stdout
    assert "instances: due_at <=, state ==" in r.stdout
    assert "alerts: open ==, order by raised_at desc" in r.stdout


def test_declared_indexes_pass(tmp_path: Path) -> None:
    r = _run(tmp_path, textwrap.dedent("""\
        indexes:
          - collection: instances
            fields: [{field: state}, {field: due_at}]
          - collection: alerts
            fields: [{field: open}, {field: raised_at, order: DESCENDING}]
        """))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "missing Firestore indexes" not in r.stdout
