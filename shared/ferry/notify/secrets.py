"""The secrets port: a channel's routing key or URL from the reference its Team manifest holds.

References (``ferry.domain.manifests.SecretRef``):

- ``projects/P/secrets/S/versions/V`` — a Secret Manager secret version (the cloud). In the local
  stack the same reference reads ``FERRY_SECRET_<S>`` (upper-cased, ``-``/``.`` as ``_``) or the file
  ``$FERRY_HOME/secrets/<S>``, so one manifest works in both.
- ``env:NAME`` / ``file:PATH`` — the local stack only.

Values are cached in the process for a few minutes (a rotated secret is picked up after that).
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from ferry.domain.manifests import secret_env_name
from ferry.errors import InfraError

VERSION = re.compile(r"^projects/([^/]+)/secrets/([^/]+)/versions/([^/]+)$")
CACHE_SECONDS = 300.0


class SecretUnavailable(InfraError):
    """A secret could not be read (missing, no permission, the service failed)."""


class SecretRefused(SecretUnavailable):
    """A reference the channel may not use (not its team's secret, or the stack's own credential):
    never read, and no later try can change that."""


# The stack's own credentials: whatever a reference says, their values are never a channel's secret.
STACK_CREDENTIALS = ("FERRY_STACK_SECRET",)


class SecretStore(Protocol):
    def resolve(self, ref: str) -> str:
        """The secret's value (text, surrounding whitespace stripped).

        Raises:
            SecretUnavailable: it does not exist, is not readable, or the reference is not supported here.
        """
        ...


def env_name(secret: str) -> str:
    return secret_env_name(secret)


class LocalSecrets:
    """The local stack's secrets: environment variables and files (``home`` is FERRY_HOME)."""

    def __init__(self, home: Path | str | None = None, environ: dict[str, str] | None = None) -> None:
        self.home = Path(home or os.environ.get("FERRY_HOME") or ".ferry")
        self.environ = environ if environ is not None else os.environ

    def resolve(self, ref: str) -> str:
        return self._not_a_stack_credential(self._read(ref), ref)

    def _read(self, ref: str) -> str:
        if ref.startswith("env:"):
            if not ref[4:].startswith("FERRY_SECRET_"):
                raise SecretRefused(f"secret {ref}: only FERRY_SECRET_* variables hold channel secrets")
            value = self.environ.get(ref[4:])
            if not value:
                raise SecretUnavailable(f"secret {ref}: environment variable {ref[4:]} is not set")
            return value.strip()
        if ref.startswith("file:"):
            return self._file(Path(ref[5:]).expanduser(), ref)
        m = VERSION.match(ref)
        if m is None:
            raise SecretUnavailable(f"not a secret reference: {ref!r}")
        name = m.group(2)
        value = self.environ.get(env_name(name))
        if value:
            return value.strip()
        return self._file(self.home / "secrets" / name, ref)

    def _not_a_stack_credential(self, value: str, ref: str) -> str:
        for name in STACK_CREDENTIALS:
            own = (self.environ.get(name) or "").strip()
            if own and value == own:
                raise SecretRefused(f"secret {ref}: holds the stack's own credential ({name}); never sent to a channel")
        return value

    def _file(self, path: Path, ref: str) -> str:
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise SecretUnavailable(f"secret {ref}: cannot read {path} ({exc.strerror})") from exc
        if not value:
            raise SecretUnavailable(f"secret {ref}: {path} is empty")
        return value


class SecretManagerSecrets:
    """Secret Manager (``AccessSecretVersion``) through an injectable ``SecretManagerServiceClient``."""

    def __init__(self, client: Any = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import secretmanager

            self._client = secretmanager.SecretManagerServiceClient()
        return self._client

    def resolve(self, ref: str) -> str:
        from google.api_core import exceptions as gexc

        if VERSION.match(ref) is None:
            raise SecretUnavailable(f"secret {ref}: only Secret Manager references (projects/*/secrets/*/versions/*) "
                                    "are read in the cloud; env: and file: are for the local stack")
        try:
            response = self.client.access_secret_version(request={"name": ref}, timeout=10.0)
        except gexc.GoogleAPICallError as exc:
            raise SecretUnavailable(f"secret {ref}: {exc.message or exc}") from exc
        return bytes(response.payload.data).decode().strip()


class CachedSecrets:
    """Any store with values kept ``ttl`` seconds (Secret Manager bills and rate-limits accesses)."""

    def __init__(self, inner: SecretStore, ttl: float = CACHE_SECONDS) -> None:
        self.inner, self.ttl = inner, ttl
        self._values: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def resolve(self, ref: str) -> str:
        now = time.monotonic()
        with self._lock:
            hit = self._values.get(ref)
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        value = self.inner.resolve(ref)
        with self._lock:
            self._values[ref] = (now, value)
        return value


def secrets_for(kind: str) -> SecretStore:  # ferry.bootstrap builds it from settings.secrets
    """The adapter ``FERRY_SECRETS`` names: ``secretmanager`` (cloud) or ``local``."""
    if kind == "secretmanager":
        return CachedSecrets(SecretManagerSecrets())
    if kind == "local":
        return CachedSecrets(LocalSecrets(), ttl=5.0)
    raise InfraError(f"unknown FERRY_SECRETS {kind!r} (secretmanager or local)")
