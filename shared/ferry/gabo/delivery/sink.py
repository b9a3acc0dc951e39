"""The sink port (where delivered events are stored) and its adapters: a local directory and GCS.

Both keep the same object layout (``staging/...``, ``events/<type>/dt=.../hour=.../part-NNNNN.jsonl.gz``,
``_SUCCESS``), and both pass the one contract suite in ``tests/contract/test_gabo_sink.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from ferry.errors import BadRequest, InfraError, NotFound


class Sink(Protocol):
    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically and durably (whole or not at all; replaces).

        Raises:
            InfraError: the object is not known to be stored (the caller must not ack its input).
        """
        ...

    def read(self, key: str) -> bytes:
        """The object's bytes. Raises NotFound."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; absent keys are fine (idempotent)."""
        ...

    def uri(self, key: str) -> str:
        """Where ``key`` is, as a URI (``file://...``, ``gs://...``)."""
        ...


class LocalSink:
    """A directory: write to a temporary file, fsync, rename (atomic on POSIX), fsync the directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root not in p.parents:
            raise BadRequest(f"object key escapes the sink: {key!r}")
        return p

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise InfraError(f"writing {self.uri(key)} failed: {exc}") from exc

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.uri(key)} does not exist") from None

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if base.is_file():
            return [prefix]
        start = base if base.is_dir() else base.parent
        if not start.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                key = str(Path(dirpath, name).relative_to(self.root))
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return f"file://{self.root}/{key}"


class GcsSink:
    """A bucket and prefix through google-cloud-storage (an uploaded object is durable once the call returns).

    Takes an optional ``client`` (tests pass one bound to a storage emulator); nothing connects at import.
    """

    def __init__(self, bucket: str, prefix: str = "", client: Any = None, project: str | None = None) -> None:
        self.bucket_name = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client = client
        self._project = project
        self._bucket: Any = None

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            if self._client is None:
                import google.cloud.storage as storage

                self._client = storage.Client(project=self._project)
            self._bucket = self._client.bucket(self.bucket_name)
        return self._bucket

    def _name(self, key: str) -> str:
        return self.prefix + key

    def write(self, key: str, data: bytes) -> None:
        from google.api_core import exceptions as gexc

        try:
            # One request (no resumable session): the object appears whole when it returns 200.
            self.bucket.blob(self._name(key)).upload_from_string(data, content_type="application/octet-stream")
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"writing {self.uri(key)} failed: {exc}") from exc

    def read(self, key: str) -> bytes:
        from google.api_core import exceptions as gexc

        try:
            return bytes(self.bucket.blob(self._name(key)).download_as_bytes())
        except gexc.NotFound:
            raise NotFound(f"{self.uri(key)} does not exist") from None
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"reading {self.uri(key)} failed: {exc}") from exc

    def list(self, prefix: str) -> list[str]:
        from google.api_core import exceptions as gexc

        try:
            blobs = self.bucket.client.list_blobs(self.bucket_name, prefix=self._name(prefix))
            return sorted(b.name[len(self.prefix):] for b in blobs)
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"listing {self.uri(prefix)} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        return bool(self.bucket.blob(self._name(key)).exists())

    def delete(self, key: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.bucket.blob(self._name(key)).delete()
        except gexc.NotFound:
            return
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"deleting {self.uri(key)} failed: {exc}") from exc

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(key)}"


class PrefixedSink:
    """Another sink's objects under ``prefix`` (the darkload shadow's ``darkload/``): keys in and out are
    relative to the prefix, so the staging and closing layout — and the code that reads it — is one."""

    def __init__(self, inner: Sink, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix

    def write(self, key: str, data: bytes) -> None:
        self.inner.write(self.prefix + key, data)

    def read(self, key: str) -> bytes:
        return self.inner.read(self.prefix + key)

    def list(self, prefix: str) -> list[str]:
        n = len(self.prefix)
        return [k[n:] for k in self.inner.list(self.prefix + prefix)]

    def exists(self, key: str) -> bool:
        return self.inner.exists(self.prefix + key)

    def delete(self, key: str) -> None:
        self.inner.delete(self.prefix + key)

    def uri(self, key: str) -> str:
        return self.inner.uri(self.prefix + key)


def within(sink: Sink, prefix: str) -> Sink:
    """``sink`` itself for no prefix, else its objects under ``prefix``."""
    return PrefixedSink(sink, prefix) if prefix else sink


def open_sink(url: str, client: Any = None) -> Sink:
    """``file://PATH`` (relative paths allowed) or ``gs://BUCKET[/PREFIX]``."""
    if url.startswith("gs://"):
        bucket, _, prefix = url[5:].partition("/")
        if not bucket:
            raise BadRequest(f"sink URL without a bucket: {url!r}")
        return GcsSink(bucket, prefix, client)
    if url.startswith("file://"):
        return LocalSink(url[7:])
    raise BadRequest(f"unknown sink {url!r}: use file://DIR or gs://BUCKET/PREFIX")
