from __future__ import annotations

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
