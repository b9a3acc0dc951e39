"""End-to-end fixtures: ``stack``, the local stack of the repository's ``infra/`` for the whole session.

Built by the same code as ``ferry dev up`` (``ferry.dev.stack.up``) on the session's emulators (the
``emulators`` fixture of tests/conftest.py), with a project id of its own and a temporary FERRY_HOME.
The local scheduler is off: tests run ``ferry evaluate`` / ``ferry tick`` ... explicitly.

    def test_something(stack: LocalStack) -> None:
        stack.cli("apply", "-f", str(path), check=True)
        assert "..." in stack.cli("get", "endpoints", "--json").stdout
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import conftest_cli_output
from ferry.dev import stack as stack_mod
from ferry.dev.harness import LocalStack

__all__ = ["LocalStack"]


@pytest.fixture(scope="session")
def stack(emulators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:  # type: ignore[no-untyped-def]
    """Every function of infra/ running in functions-framework processes, topics and push subscriptions
    created, on the session emulators; stopped (and checked gone) at the end of the session."""
    home = tmp_path_factory.mktemp("ferry-home")
    config = stack_mod.StackConfig(home=home, project=f"e2e-{uuid.uuid4().hex[:10]}", scheduler=False,
                                   firestore=emulators.firestore, pubsub=emulators.pubsub)
    with LocalStack.running(config) as running:
        yield running


@pytest.fixture(scope="session", autouse=True)
def no_python_reprs_in_cli_output() -> None:
    """Every CLI output the e2e suite captured (``ferry.dev.harness.run_cli``) speaks JSON or words:
    no ``{'`` or ``['`` — checked once the session's tests ran (over every xdist worker:
    tests/conftest_cli_output.py)."""
    conftest_cli_output.e2e_ran()
