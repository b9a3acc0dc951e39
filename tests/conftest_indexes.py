"""The index check: every Firestore query the test suite made must have its composite index declared.

The Firestore emulator serves any query; production refuses one whose composite index is missing.
The store adapters record each query's shape (``ferry.store.base.record_query``); functions running
in subprocesses (the local stack) append theirs to ``FERRY_QUERY_SHAPES_FILE``. At the end of the
session every shape is checked against ``infra/`` (``FERRY_INFRA_DIR`` overrides) and a missing index
fails the run, naming the collection, the fields and the YAML to add.

With pytest-xdist every worker keeps a shapes file of its own (its stacks' functions inherit it) and
hands its shapes to the controller when it finishes; the controller checks the union once, so the
verdict and the report are the same as in a single-process run.

Tests that make ad-hoc queries on purpose (the store's own contract suite) are exempt, as is any
test marked ``unindexed_queries``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.store import base
from ferry.store.base import QueryShape

EXEMPT_FILES = ("tests/contract/test_document_store.py", "tests/unit/deploy/test_indexes.py")
WORKER_OUTPUT_KEY = "ferry_query_shapes"
_checked: set[QueryShape] = set()
_from_workers: set[QueryShape] = set()
_shapes_file: Path | None = None
_report: list[str] = []
_summary: list[str] = []


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    global _shapes_file
    config.addinivalue_line("markers", "unindexed_queries: the test's queries are not checked against infra/ indexes")
    # A worker always starts a file of its own: the one inherited from the controller would mix the
    # in-process shapes of every worker (exempt ones included) into each worker's subprocess shapes.
    if "FERRY_QUERY_SHAPES_FILE" not in os.environ or _is_worker(config):
        fd, name = tempfile.mkstemp(prefix="ferry-query-shapes-", suffix=".jsonl")
        os.close(fd)
        _shapes_file = Path(name)
        os.environ["FERRY_QUERY_SHAPES_FILE"] = name


def _exempt(item: pytest.Item) -> bool:
    path = str(item.path).replace(os.sep, "/")
    return item.get_closest_marker("unindexed_queries") is not None or path.endswith(EXEMPT_FILES)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    base.QUERY_SHAPES.clear()
    yield
    if not _exempt(item):
        _checked.update(base.QUERY_SHAPES)
    base.QUERY_SHAPES.clear()


def _subprocess_shapes() -> set[QueryShape]:
    path = os.environ.get("FERRY_QUERY_SHAPES_FILE")
    if not path or not Path(path).exists():
        return set()
    out = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("pid") == os.getpid():
            continue  # this process's shapes were collected per test (with exemptions)
        out.add(_shape(d["collection"], d["filters"], d["order_by"], d["descending"]))
    return out


def _shape(collection: str, filters: Any, order_by: str | None, descending: bool) -> QueryShape:
    return QueryShape(collection, tuple(tuple(f) for f in filters), order_by, descending)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist (controller): a worker finished — take the shapes it saw."""
    for collection, filters, order_by, descending in getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY, []):
        _from_workers.add(_shape(collection, filters, order_by, descending))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from ferry.deploy.indexes import as_yaml, describe, missing, required
    from ferry.infra.model import load

    shapes = _checked | _subprocess_shapes() | _from_workers
    if _shapes_file is not None:
        _shapes_file.unlink(missing_ok=True)
    if _is_worker(session.config):  # the controller checks the union of every worker's shapes
        session.config.workeroutput[WORKER_OUTPUT_KEY] = [  # type: ignore[attr-defined]
            [s.collection, [list(f) for f in s.filters], s.order_by, s.descending] for s in shapes]
        return
    if not shapes:
        return
    infra_dir = os.environ.get("FERRY_INFRA_DIR")
    gaps = missing(shapes, load(infra_dir))
    composite = sum(1 for s in shapes if required(s) is not None)
    _summary.append(f"index check: {len(shapes)} query shapes checked against infra/, {composite} need a "
                    f"composite index, {len(gaps)} undeclared")
    if not gaps:
        return
    _report.append(f"{len(gaps)} Firestore quer{'y needs' if len(gaps) == 1 else 'ies need'} a composite index "
                   f"that infra/ does not declare (the emulator serves it; production refuses it):")
    for shape, ix in gaps:
        _report.append(f"  - {describe(shape)}  →  index on {ix.collection}: "
                       + ", ".join(f"{f.field} {f.array_config or f.order}" for f in ix.fields))
    _report.append("add to the infra/*.yaml of the subsystem that makes the query:")
    _report.extend("    " + line for line in as_yaml([ix for _, ix in gaps]).splitlines())
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _summary:
        terminalreporter.write_line(line)
    if _report:
        terminalreporter.section("missing Firestore indexes", sep="=", red=True, bold=True)
        for line in _report:
            terminalreporter.write_line(line, red=line.startswith(("  -", "1", "2", "3", "4", "5", "6", "7", "8", "9")))
