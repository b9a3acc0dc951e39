"""One contract for Gabo's sink port, run against the local directory and GCS (gcp-storage-emulator).

The GCS adapter talks the real JSON API through google-cloud-storage to an in-process storage emulator
from PyPI (skipped, loudly, where that package is not installed).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ferry.errors import BadRequest, NotFound
from ferry.gabo.delivery.sink import GcsSink, LocalSink, Sink, open_sink


@pytest.fixture(params=["local", "gcs"])
def sink(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sink:
    if request.param == "local":
        return LocalSink(tmp_path / "sink")
    url = request.getfixturevalue("gcs_server")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test", credentials=AnonymousCredentials())
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    client.create_bucket(bucket)
    return GcsSink(bucket, "ferry/data", client)


def test_write_read_replace(sink: Sink) -> None:
    sink.write("staging/play/k/a.jsonl.gz", b"one")
    assert sink.read("staging/play/k/a.jsonl.gz") == b"one"
    sink.write("staging/play/k/a.jsonl.gz", b"two")  # a retried write replaces, whole
    assert sink.read("staging/play/k/a.jsonl.gz") == b"two"
    assert sink.exists("staging/play/k/a.jsonl.gz")


def test_read_missing_is_not_found(sink: Sink) -> None:
    with pytest.raises(NotFound):
        sink.read("nope/x")
    assert not sink.exists("nope/x")


def test_list_is_sorted_and_scoped_by_prefix(sink: Sink) -> None:
    for k in ("staging/play/2/b", "staging/play/1/a", "staging/playx/1/c", "events/play/dt=2026-11-26/_SUCCESS"):
        sink.write(k, b"x")
    assert sink.list("staging/play/") == ["staging/play/1/a", "staging/play/2/b"]
    assert sink.list("staging/play/1/") == ["staging/play/1/a"]
    assert sink.list("events/") == ["events/play/dt=2026-11-26/_SUCCESS"]
    assert sink.list("absent/") == []


def test_delete_is_idempotent(sink: Sink) -> None:
    sink.write("a/b", b"x")
    sink.delete("a/b")
    sink.delete("a/b")
    assert not sink.exists("a/b") and sink.list("a/") == []


def test_empty_and_binary_objects(sink: Sink) -> None:
    blob = bytes(range(256)) * 100
    sink.write("bin/x", blob)
    sink.write("bin/empty", b"")
    assert sink.read("bin/x") == blob and sink.read("bin/empty") == b""


def test_uri_names_the_object(sink: Sink) -> None:
    uri = sink.uri("events/play/dt=2026-11-26/")
    assert uri.startswith(("file://", "gs://")) and uri.endswith("events/play/dt=2026-11-26/")
    if isinstance(sink, GcsSink):
        assert "/ferry/data/events/" in uri


def test_local_sink_refuses_keys_escaping_its_root(tmp_path: Path) -> None:
    with pytest.raises(BadRequest):
        LocalSink(tmp_path / "s").write("../outside", b"x")


def test_open_sink_urls(tmp_path: Path) -> None:
    assert isinstance(open_sink(f"file://{tmp_path}"), LocalSink)
    g = open_sink("gs://bucket/some/prefix")
    assert isinstance(g, GcsSink) and g.uri("k") == "gs://bucket/some/prefix/k"
    with pytest.raises(BadRequest):
        open_sink("s3://x")
