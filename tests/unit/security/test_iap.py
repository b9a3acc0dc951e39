"""A person in a browser through Identity-Aware Proxy (issue 21): the app verifies IAP's signed header
(ES256, keys served locally as IAP's JWK set) and applies the same ownership rules to that identity."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from fakes.iap import AUDIENCE, Proxy, iap, new_key
from fakes.oidc import Issuer, issuer
from ferry.api.app import router
from ferry.api.iap import IapConfig, IapVerifier, browser_identity
from ferry.api.identity import OIDC, Identifier, IdentityConfig
from ferry.bootstrap import Services, in_memory
from ferry.config import Settings
from ferry.errors import Unauthenticated

API_AUD = "https://europe-west1-p.cloudfunctions.net/api"
ADMIN = "root@example.com"


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    with iap() as p:
        yield p


@pytest.fixture(scope="module")
def iss() -> Iterator[Issuer]:
    with issuer() as i:
        yield i


def services(proxy: Proxy, iss: Issuer, audience: str = AUDIENCE) -> Services:
    config = IdentityConfig(OIDC, (API_AUD,), iss.certs_url, iap=IapConfig(audience, proxy.keys_url))
    return in_memory(settings=Settings(identity=OIDC), identifier=Identifier(config))


def call(svc: Services, method: str, path: str, headers: dict[str, str], body: object = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    return router.dispatch(svc, method, path, {}, headers, json.dumps(body).encode() if body is not None else b"")


def via_iap(token: str) -> dict[str, str]:
    # what Cloud Run hands the app behind IAP: the assertion, and X-Serverless-Authorization with its
    # signature stripped (Google's "Enabling IAP for Cloud Run": it must not be what decides)
    return {"x-goog-iap-jwt-assertion": token, "X-Serverless-Authorization": "Bearer stripped.signature."}


def test_a_valid_assertion_is_the_persons_email(proxy: Proxy, iss: Issuer) -> None:
    status, body = call(services(proxy, iss), "GET", "/v1/whoami", via_iap(proxy.assertion("ana@example.com")))
    assert (status, body["user"], body["operator"]) == (200, "ana@example.com", False)


@pytest.mark.parametrize("case", ["forged", "expired", "wrong-audience", "app-engine-audience", "wrong-issuer",
                                  "rs256-id-token", "unknown-kid", "no-email", "future-iat", "garbage", "missing"])
def test_the_proxy_header_matrix_is_401(proxy: Proxy, iss: Issuer, case: str) -> None:
    token = {
        "forged": lambda: proxy.assertion(ADMIN, key_pem=new_key()),  # same kid, a key IAP never published
        "expired": lambda: proxy.assertion(ADMIN, issued_at=time.time() - 1200, expires_in=600),
        "wrong-audience": lambda: proxy.assertion(ADMIN, "/projects/123456789012/global/backendServices/1"),
        "app-engine-audience": lambda: proxy.assertion(ADMIN, "/projects/123456789012/apps/p"),
        "wrong-issuer": lambda: proxy.assertion(ADMIN, issuer="https://accounts.google.com"),
        "rs256-id-token": lambda: iss.token(ADMIN, AUDIENCE),  # a Google ID token is not IAP's assertion
        "unknown-kid": lambda: proxy.assertion(ADMIN, kid="not-published"),
        "no-email": lambda: proxy.assertion(""),
        "future-iat": lambda: proxy.assertion(ADMIN, issued_at=time.time() + 600),
        "garbage": lambda: "not-a-jwt",
    }.get(case)
    headers = {} if token is None else via_iap(token())
    status, body = call(services(proxy, iss), "GET", "/v1/whoami", headers)
    assert status == 401, (case, body)
    assert body["error"]["code"] == "unauthenticated"


def test_the_app_engine_audience_is_accepted_when_configured(proxy: Proxy, iss: Issuer) -> None:
    aud = "/projects/123456789012/apps/p"
    status, body = call(services(proxy, iss, aud), "GET", "/v1/whoami", via_iap(proxy.assertion("ana@example.com", aud)))
    assert (status, body["user"]) == (200, "ana@example.com")


def test_without_iap_configured_an_assertion_means_nothing(proxy: Proxy, iss: Issuer) -> None:
    svc = services(proxy, iss, audience="")
    assert call(svc, "GET", "/v1/whoami", {"x-goog-iap-jwt-assertion": proxy.assertion(ADMIN)})[0] == 401
    # ... and the CLI's ID token still works beside it
    status, body = call(svc, "GET", "/v1/whoami", {"Authorization": f"Bearer {iss.token('ana@example.com', API_AUD)}"})
    assert (status, body["user"]) == (200, "ana@example.com")


def test_the_same_ownership_rules_apply_to_the_browser_identity(proxy: Proxy, iss: Issuer,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_ADMINS", ADMIN)
    svc = services(proxy, iss)
    team = {"apiVersion": "ferry/v1", "kind": "Team", "metadata": {"name": "team-a"},
            "spec": {"members": ["ana@example.com"], "admins": ["ana@example.com"]}}
    endpoint = {"apiVersion": "ferry/v1", "kind": "Endpoint", "metadata": {"name": "plays", "owner": "team-a"},
                "spec": {"partitioning": "daily", "sla": {"error_after": "PT2H"}}}
    admin = {"Authorization": f"Bearer {iss.token(ADMIN, API_AUD)}"}
    assert call(svc, "POST", "/v1/apply", admin, {"manifests": [team]})[0] == 200
    status, body = call(svc, "POST", "/v1/apply", via_iap(proxy.assertion("ana@example.com")), {"manifests": [endpoint]})
    assert status == 200, body
    status, body = call(svc, "DELETE", "/v1/endpoints/plays", via_iap(proxy.assertion("mallory@example.com")))
    assert status == 403, body
    assert call(svc, "DELETE", "/v1/endpoints/plays", via_iap(proxy.assertion("ana@example.com")))[0] == 200


def test_browser_identity_is_the_port_web_views_use(proxy: Proxy) -> None:
    verifier = IapVerifier(IapConfig(AUDIENCE, proxy.keys_url))
    assert browser_identity({"X-Goog-IAP-JWT-Assertion": proxy.assertion("ana@example.com")}, verifier) == "ana@example.com"
    with pytest.raises(Unauthenticated, match="Identity-Aware Proxy"):
        browser_identity({}, verifier)


def test_keys_are_cached_and_refetched_for_an_unknown_kid(proxy: Proxy) -> None:
    verifier = IapVerifier(IapConfig(AUDIENCE, proxy.keys_url))
    before = len(proxy.fetches)
    for _ in range(5):
        verifier.verify(proxy.assertion("ana@example.com"))
    assert len(proxy.fetches) - before == 1
    with pytest.raises(Unauthenticated):
        verifier.verify(proxy.assertion("ana@example.com", kid="rotated"))
    assert len(proxy.fetches) - before == 2
