"""The CLI output check: every CLI output the end-to-end suite captured (``ferry.dev.harness.run_cli``)
speaks JSON or words — no ``{'`` or ``['`` — and some output was captured at all.

Checked at the end of the session over everything the session captured; with pytest-xdist each worker
hands its captures' verdict to the controller, which checks them together (a worker whose e2e modules
made no CLI call is not a failure when another worker's did). The e2e suite turns the check on
(``tests/e2e/conftest.py``): a run without e2e tests checks nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from ferry.dev.harness import CAPTURED, python_reprs

WORKER_OUTPUT_KEY = "ferry_cli_output"
_seen: dict[str, Any] = {"e2e": False, "captured": 0, "reprs": []}
_report: list[str] = []


def e2e_ran() -> None:
    """Called by the e2e suite: this session ran end-to-end tests, so their CLI outputs are checked."""
    _seen["e2e"] = True


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist (controller): a worker finished — add what it captured."""
    theirs = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
    if theirs:
        _seen["e2e"] = _seen["e2e"] or theirs["e2e"]
        _seen["captured"] += theirs["captured"]
        _seen["reprs"] += theirs["reprs"]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _seen["captured"] += len(CAPTURED)
    _seen["reprs"] += python_reprs()
    if hasattr(session.config, "workerinput"):  # the controller judges all workers together
        session.config.workeroutput[WORKER_OUTPUT_KEY] = dict(_seen)  # type: ignore[attr-defined]
        return
    if not _seen["e2e"]:
        return
    if not _seen["captured"]:
        _report.append("no CLI output was captured by the e2e suite (ferry.dev.harness.run_cli)")
    if _seen["reprs"]:
        _report.append("Python reprs in CLI output:")
        _report.extend("  " + line for line in _seen["reprs"][:20])
    if _report and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _report:
        terminalreporter.section("CLI output check", sep="=", red=True, bold=True)
        for line in _report:
            terminalreporter.write_line(line, red=True)
