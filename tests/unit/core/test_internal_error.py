"""An unexpected error names the component that answered what (a client reaching the wrong server shows)."""

from __future__ import annotations

import pytest

from ferry.api.router import answered


def _raised_in(path: str, message: str) -> BaseException:
    try:
        exec(compile(f"raise RuntimeError({message!r})", path, "exec"))  # noqa: S102 (a frame in that module)
    except RuntimeError as exc:
        return exc
    raise AssertionError("not raised")


def test_firestore_errors_name_firestore_and_its_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:8791")
    exc = _raised_in("/venv/lib/google/cloud/firestore_v1/client.py", "MethodNotImplemented")
    assert answered(exc) == "Firestore at 127.0.0.1:8791 answered RuntimeError: MethodNotImplemented"


def test_pubsub_in_the_cloud_and_other_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    exc = _raised_in("/venv/lib/google/cloud/pubsub_v1/publisher.py", "denied")
    assert answered(exc) == "Pub/Sub at Google Cloud answered RuntimeError: denied"
    assert answered(KeyError("k")) == "KeyError: 'k'"
