from __future__ import annotations

from collections.abc import Iterator

import pytest

from ferry.store.memory import MemoryStore


@pytest.fixture(params=["memory", pytest.param("firestore", marks=pytest.mark.emulator)])
def store(request: pytest.FixtureRequest, project_id: str):
    """The same contract, against the in-memory fake and the Firestore emulator."""
    if request.param == "memory":
        return MemoryStore()
    request.getfixturevalue("emulators")
    from ferry.store.firestore import FirestoreStore

    return FirestoreStore(project_id)


@pytest.fixture(scope="module")
def gcs_server() -> Iterator[str]:
    """A GCS JSON API on loopback (gcp-storage-emulator, a dev dependency: missing is a failure)."""
    from gcp_storage_emulator.server import create_server

    from ferry.dev.emulators import free_port

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
