"""The CLI signs a person in to a deployed Ferry (issue 21): from the credentials ``gcloud auth
application-default login`` writes (``authorized_user``) it gets a Google ID token from the token
endpoint (a local fake, tests/fakes/google_token.py), sends it, caches it and mints a new one when it
expires; without credentials it exits 5 naming the command to run and calls nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fakes.api_server import served, threaded
from fakes.google_token import GCLOUD_ADC_CLIENT_ID, TokenEndpoint, routed_transport, token_endpoint
from fakes.oidc import Issuer, issuer
from ferry.api.identity import OIDC, Identifier, IdentityConfig
from ferry.bootstrap import Services, in_memory
from ferry.cli import main, signin
from ferry.cli.signin import SignIn, TokenCache, needs_token
from ferry.config import Settings

SA_AUDIENCE = "https://api-abc123-ew.a.run.app"


@pytest.fixture(scope="module")
def iss() -> Iterator[Issuer]:
    with issuer() as i:
        yield i


@pytest.fixture()
def google(iss: Issuer, monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenEndpoint]:
    with token_endpoint(iss) as ep:
        monkeypatch.setattr(signin, "google_transport", lambda: routed_transport(ep))
        yield ep


@pytest.fixture()
def deployment(iss: Issuer) -> Iterator[tuple[Services, str]]:
    """The API as deployed: OIDC identity; people's tokens carry the OAuth client id of their gcloud login."""
    config = IdentityConfig(OIDC, (GCLOUD_ADC_CLIENT_ID, SA_AUDIENCE), iss.certs_url)
    svc = in_memory(settings=Settings(identity=OIDC), identifier=Identifier(config))
    with served(svc) as url:
        yield svc, url


@pytest.fixture(autouse=True)
def person(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A workstation with no credentials yet: its own gcloud config, token cache and no metadata server."""
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "FERRY_ID_TOKEN", "FERRY_AUDIENCE", "FERRY_API", "FERRY_USER",
                 "FERRY_NO_AUTH", "FERRY_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("FERRY_AUTH", "idtoken")  # the fake deployment listens on loopback
    monkeypatch.chdir(tmp_path)


def gcloud_login(google: TokenEndpoint, tmp_path: Path, email: str = "ana@example.com") -> None:
    """What `gcloud auth application-default login` leaves behind (its well-known file)."""
    (tmp_path / "gcloud").mkdir(exist_ok=True)
    google.authorized_user_file(tmp_path / "gcloud" / "application_default_credentials.json", email)


def ferry(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def whoami(url: str) -> dict:  # type: ignore[type-arg]
    r = ferry("whoami", "--api", url, "-o", "json")
    assert r.exit_code == 0, r.output
    seen = json.loads(r.output)["api_sees"]
    assert "error" not in seen, seen
    return seen  # type: ignore[no-any-return]


def test_a_person_signed_in_with_gcloud_reaches_the_deployment(google: TokenEndpoint, deployment: tuple[Services, str],
                                                              tmp_path: Path) -> None:
    gcloud_login(google, tmp_path)
    seen = whoami(deployment[1])
    assert seen["user"] == "ana@example.com" and seen["identity"] == "oidc"
    assert [g["grant_type"] for g in google.grants] == ["refresh_token"]
    assert google.grants[0]["client_id"] == GCLOUD_ADC_CLIENT_ID


def test_the_token_is_cached_then_minted_again_when_it_expires(google: TokenEndpoint, deployment: tuple[Services, str],
                                                              tmp_path: Path) -> None:
    gcloud_login(google, tmp_path)
    url = deployment[1]
    assert whoami(url)["user"] == "ana@example.com"
    assert whoami(url)["user"] == "ana@example.com"
    assert len(google.grants) == 1, "a valid cached token is reused"
    cache_file = tmp_path / "cache" / "ferry" / "id-tokens.json"
    assert cache_file.stat().st_mode & 0o077 == 0, "only the user reads the cache"

    def the_hour_passes() -> None:
        cache = json.loads(cache_file.read_text())
        (entry,) = cache.values()
        entry["exp"] = time.time() - 5
        cache_file.write_text(json.dumps(cache))

    the_hour_passes()
    assert whoami(url)["user"] == "ana@example.com"
    assert len(google.grants) == 2, "an expired token is minted again"
    google.lifetime_s = 30  # a token within a minute of its expiry is not sent either
    the_hour_passes()
    whoami(url)
    whoami(url)
    assert len(google.grants) == 4


def test_a_token_the_deployment_refuses_is_minted_again_once(google: TokenEndpoint, deployment: tuple[Services, str],
                                                            tmp_path: Path, iss: Issuer) -> None:
    gcloud_login(google, tmp_path)
    url = deployment[1]
    whoami(url)
    cache_file = tmp_path / "cache" / "ferry" / "id-tokens.json"
    cache = json.loads(cache_file.read_text())
    (key,) = cache
    cache[key]["token"] = iss.token("ana@example.com", "https://someone-else.example")  # e.g. a stale audience
    cache_file.write_text(json.dumps(cache))
    assert whoami(url)["user"] == "ana@example.com"
    assert len(google.grants) == 2


def _counting() -> tuple[type[BaseHTTPRequestHandler], list[str]]:
    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            calls.append(self.path)
            self.send_response(401)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    return Handler, calls


def test_without_credentials_exit_5_names_the_command_and_nothing_is_called() -> None:
    handler, calls = _counting()
    with threaded(handler) as url:
        r = ferry("get", "endpoints", "--api", url)
    assert r.exit_code == 5, r.output
    assert "gcloud auth application-default login" in r.output
    assert calls == [], "no unauthenticated call"


def test_a_revoked_login_exits_5_asking_to_log_in_again(google: TokenEndpoint, tmp_path: Path) -> None:
    gcloud_login(google, tmp_path)
    google.revoked.update(google.users)
    handler, calls = _counting()
    with threaded(handler) as url:
        r = ferry("get", "endpoints", "--api", url)
    assert r.exit_code == 5, r.output
    assert "run `gcloud auth application-default login` again" in r.output
    assert calls == []


def test_a_service_account_key_mints_a_token_for_the_api(google: TokenEndpoint, deployment: tuple[Services, str],
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sa = "ferry-ci@p.iam.gserviceaccount.com"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(google.service_account_file(tmp_path / "sa.json", sa)))
    monkeypatch.setenv("FERRY_AUDIENCE", SA_AUDIENCE)
    assert whoami(deployment[1])["user"] == sa
    assert [g["grant_type"] for g in google.grants] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]


def test_an_explicit_token_is_sent_and_an_expired_one_refused(iss: Issuer, deployment: tuple[Services, str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_ID_TOKEN", iss.token("ci@example.com", GCLOUD_ADC_CLIENT_ID))
    assert whoami(deployment[1])["user"] == "ci@example.com"
    monkeypatch.setenv("FERRY_ID_TOKEN", iss.token("ci@example.com", GCLOUD_ADC_CLIENT_ID,
                                                   issued_at=time.time() - 7200))
    r = ferry("get", "endpoints", "--api", deployment[1])
    assert r.exit_code == 5 and "gcloud auth print-identity-token" in r.output


def test_the_local_stack_takes_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRY_AUTH")
    assert not needs_token("http://127.0.0.1:8700")
    assert not needs_token("http://localhost:8700")
    assert needs_token("https://api-abc123-ew.a.run.app")
    monkeypatch.setenv("FERRY_AUTH", "none")
    assert not needs_token("https://api-abc123-ew.a.run.app")


def test_the_cache_keeps_tokens_apart_per_login(google: TokenEndpoint, tmp_path: Path) -> None:
    gcloud_login(google, tmp_path, "ana@example.com")
    ana = SignIn(TokenCache(tmp_path / "c.json")).token("https://x.example")
    gcloud_login(google, tmp_path, "bob@example.com")  # another login on the same workstation
    bob = SignIn(TokenCache(tmp_path / "c.json")).token("https://x.example")
    from ferry.cli.signin import claims

    assert (claims(ana)["email"], claims(bob)["email"]) == ("ana@example.com", "bob@example.com")
