"""Fixtures shared by the benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.dev import stack as stack_mod
from ferry.dev.harness import LocalStack


@pytest.fixture
def local_stack(emulators: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    """A local stack of the bench's own (a project of its own on the session's emulators), scheduler off:
    the bench drives delivery, scaling and closing itself."""
    prefix = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")[:12]
    config = stack_mod.StackConfig(home=tmp_path / "home", project=f"{prefix}-{uuid.uuid4().hex[:8]}",
                                   scheduler=False, firestore=emulators.firestore, pubsub=emulators.pubsub)
    with LocalStack.running(config) as running:
        yield running
