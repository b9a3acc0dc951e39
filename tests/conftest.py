"""Shared fixtures: the official emulators once per session, a fresh project id per test.

``make test`` runs the suite on pytest-xdist workers (``-n``, ``--dist loadscope``: a module stays on
one worker, so its module-scoped stacks are started once). Each worker is a session of its own: its
own emulator pair on free ports, its own FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST, its own
temporary directories (``tmp_path_factory``) and so its own FERRY_HOMEs. A fixture that needs a stack,
a home or a port takes it from these (never a fixed path or port), and works unchanged with or without
workers.

Tests marked ``emulator`` need the Pub/Sub and Firestore emulators. Where the Google Cloud SDK or its
emulators are missing they are reported as SKIPPED with the reason in the header and the summary —
never passed silently. Set FERRY_REQUIRE_EMULATORS=1 to turn that into a failure (CI does).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ferry.dev import emulators as emu

# conftest_indexes fails the session when a query the tests made needs a Firestore index infra/ does not
# declare; conftest_cli_output when a CLI output of the e2e suite carries a Python repr.
pytest_plugins = ["conftest_indexes", "conftest_cli_output"]

_MISSING = emu.missing()


def pytest_report_header(config: pytest.Config) -> str:
    if _MISSING:
        return f"!!! EMULATORS UNAVAILABLE — emulator tests will be SKIPPED: {_MISSING}"
    return "emulators: official Pub/Sub and Firestore emulators (Google Cloud SDK)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _MISSING:
        skipped = len(terminalreporter.stats.get("skipped", []))
        terminalreporter.write_line(
            f"!!! {skipped} test(s) SKIPPED because the emulators are unavailable: {_MISSING}", red=True, bold=True)


def pytest_configure(config: pytest.Config) -> None:
    # Here as well as at collection: under xdist the controller does not collect, and the run must stop
    # before any worker starts.
    if _MISSING and os.environ.get("FERRY_REQUIRE_EMULATORS") == "1":
        raise pytest.UsageError(f"FERRY_REQUIRE_EMULATORS=1 but {_MISSING}")


# Heavy directories first (a stable sort: each module keeps its order): with ``--dist loadscope
# --no-loadscope-reorder`` workers take whole modules in this order, so the long end-to-end modules start
# at once and the many short unit modules fill the workers' ends evenly.
HEAVY_FIRST = ("e2e", "contract")


def _weight(item: pytest.Item) -> int:
    try:
        top = Path(str(item.path)).relative_to(Path(__file__).parent).parts[0]
    except (ValueError, IndexError):
        top = ""
    return HEAVY_FIRST.index(top) if top in HEAVY_FIRST else len(HEAVY_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_weight)
    if not _MISSING:
        return
    if os.environ.get("FERRY_REQUIRE_EMULATORS") == "1":
        raise pytest.UsageError(f"FERRY_REQUIRE_EMULATORS=1 but {_MISSING}")
    skip = pytest.mark.skip(reason=f"emulators unavailable: {_MISSING}")
    for item in items:
        if "emulator" in item.keywords:
            item.add_marker(skip)


@dataclass
class Emulators:
    firestore: str
    pubsub: str


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulators]:
    """Both emulators, started once per test session (per xdist worker) in their own process groups."""
    logs = tmp_path_factory.mktemp("emulators")
    started: list[emu.RunningEmulator] = []
    try:
        fs = emu.start(emu.FIRESTORE, emu.free_port(), Path(logs) / "firestore.log")
        started.append(fs)
        ps = emu.start(emu.PUBSUB, emu.free_port(), Path(logs) / "pubsub.log")
        started.append(ps)
        os.environ["FIRESTORE_EMULATOR_HOST"] = fs.address
        os.environ["PUBSUB_EMULATOR_HOST"] = ps.address
        yield Emulators(fs.address, ps.address)
    finally:
        for e in started:
            emu.stop_group(e.pid)
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)


@pytest.fixture
def project_id() -> str:
    """A project id of its own per test: the emulators keep projects apart, so no cleanup is needed."""
    return f"test-{uuid.uuid4().hex[:10]}"
