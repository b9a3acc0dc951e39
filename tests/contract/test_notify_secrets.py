"""The secrets port's contract, run against every adapter: Secret Manager (the real client on a gRPC
fake of the service) and the local stack's environment/file store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import secret_manager

from ferry.notify.secrets import (
    CachedSecrets,
    LocalSecrets,
    SecretManagerSecrets,
    SecretRefused,
    SecretUnavailable,
    env_name,
)

REF = "projects/p1/secrets/team-a-hook/versions/latest"


class Local:
    def __init__(self, tmp: Path) -> None:
        self.environ: dict[str, str] = {}
        self.home = tmp
        self.store = LocalSecrets(tmp, self.environ)

    def put(self, secret: str, value: str) -> None:
        (self.home / "secrets").mkdir(exist_ok=True)
        (self.home / "secrets" / secret).write_text(value + "\n")


class Cloud:
    def __init__(self, fake: Any, client: Any) -> None:
        self.fake = fake
        self.store = SecretManagerSecrets(client)

    def put(self, secret: str, value: str) -> None:
        self.fake.add("p1", secret, value.encode())


@pytest.fixture(params=["secretmanager", "local"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "local":
        yield Local(tmp_path)
        return
    with secret_manager.serve() as (fake, client):
        yield Cloud(fake, client)


def test_resolves_a_secret_manager_reference(adapter: Any) -> None:
    adapter.put("team-a-hook", "https://hooks.example.test/a")
    assert adapter.store.resolve(REF) == "https://hooks.example.test/a"


def test_a_missing_secret_is_unavailable(adapter: Any) -> None:
    with pytest.raises(SecretUnavailable, match="team-a-hook"):
        adapter.store.resolve(REF)


def test_latest_follows_a_rotation(adapter: Any) -> None:
    adapter.put("team-a-hook", "old")
    adapter.put("team-a-hook", "new")
    assert adapter.store.resolve(REF) == "new"


def test_secret_manager_permission_denied_and_local_references() -> None:
    with secret_manager.serve() as (fake, client):
        fake.deny = True
        with pytest.raises(SecretUnavailable, match="denied"):
            SecretManagerSecrets(client).resolve(REF)
        with pytest.raises(SecretUnavailable, match="local stack"):
            SecretManagerSecrets(client).resolve("env:X")
        assert fake.requests == [REF]


def test_local_env_and_file_references(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("from-file\n")
    store = LocalSecrets(tmp_path, {"FERRY_SECRET_A": "from-env", env_name("team-a-hook"): "mapped", "A": "x"})
    assert store.resolve("env:FERRY_SECRET_A") == "from-env"
    assert store.resolve(f"file:{tmp_path / 'k'}") == "from-file"
    assert store.resolve(REF) == "mapped"  # FERRY_SECRET_TEAM_A_HOOK before $FERRY_HOME/secrets/team-a-hook
    with pytest.raises(SecretUnavailable, match="not set"):
        store.resolve("env:FERRY_SECRET_B")
    with pytest.raises(SecretRefused):  # only FERRY_SECRET_* variables are channel secrets (issue 23)
        store.resolve("env:A")


def test_the_cache_reads_each_secret_once_per_ttl() -> None:
    with secret_manager.serve() as (fake, client):
        fake.add("p1", "team-a-hook", b"v")
        cached = CachedSecrets(SecretManagerSecrets(client), ttl=60)
        assert [cached.resolve(REF) for _ in range(5)] == ["v"] * 5
        assert len(fake.requests) == 1
