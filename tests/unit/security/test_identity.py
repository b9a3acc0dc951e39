"""Verified identity (issue: unverified ID tokens). Real RS256 tokens signed with a local key, the
matching certificate served over HTTP; the API's dispatch decides who the caller is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fakes.oidc import Issuer, issuer, other_key
from ferry.api.app import router
from ferry.api.identity import (
    HEADER,
    OIDC,
    Identifier,
    IdentityConfig,
    IdentityConfigError,
    TokenVerifier,
    bearer,
    mode,
)
from ferry.bootstrap import Services, in_memory
from ferry.config import Settings
from ferry.errors import Unauthenticated

AUD = "https://europe-west1-p.cloudfunctions.net/api"
ADMIN = "root@example.com"


@pytest.fixture(scope="module")
def iss() -> Iterator[Issuer]:
    with issuer() as i:
        yield i


def oidc_services(iss: Issuer, operators: tuple[str, ...] = ()) -> Services:
    return in_memory(settings=Settings(identity=OIDC),
                     identifier=Identifier(IdentityConfig(OIDC, (AUD,), iss.certs_url, operators)))


def whoami(svc: Services, headers: dict[str, str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    return router.dispatch(svc, "GET", "/v1/whoami", {}, headers, b"")


def test_a_valid_token_is_its_email(iss: Issuer) -> None:
    status, body = whoami(oidc_services(iss), {"Authorization": f"Bearer {iss.token('ana@example.com', AUD)}"})
    assert (status, body["user"]) == (200, "ana@example.com")


@pytest.mark.parametrize("case", ["alg-none", "forged", "wrong-audience", "expired", "unverified-email",
                                  "no-email-verified-claim", "wrong-issuer", "no-email", "future-iat",
                                  "garbage", "basic-scheme", "missing"])
def test_anything_but_a_verified_token_is_401(iss: Issuer, case: str) -> None:
    token = {
        "alg-none": lambda: iss.unsigned(ADMIN, AUD),
        "forged": lambda: iss.token(ADMIN, AUD, key_pem=other_key()),
        "wrong-audience": lambda: iss.token(ADMIN, "https://europe-west1-p.cloudfunctions.net/other"),
        "expired": lambda: iss.token(ADMIN, AUD, issued_at=time.time() - 7200, expires_in=3600),
        "unverified-email": lambda: iss.token(ADMIN, AUD, email_verified=False),
        "no-email-verified-claim": lambda: iss.token(ADMIN, AUD, email_verified=None),
        "wrong-issuer": lambda: iss.token(ADMIN, AUD, issuer="https://evil.example"),
        "no-email": lambda: iss.token("", AUD),
        "future-iat": lambda: iss.token(ADMIN, AUD, issued_at=time.time() + 3600),
        "garbage": lambda: "not-a-jwt",
    }.get(case)
    headers = ({"Authorization": "Basic cm9vdDpyb290"} if case == "basic-scheme" else
               {} if case == "missing" else {"Authorization": f"Bearer {token()}"})  # type: ignore[misc]
    status, body = whoami(oidc_services(iss), headers)
    assert status == 401, (case, body)
    assert body["error"]["code"] == "unauthenticated"


def test_the_alg_none_token_of_the_finding_no_longer_makes_an_admin(iss: Issuer) -> None:
    """The reproduced exploit: {"alg":"none"}.{"email": <an admin>}.x changed a Team as that admin."""
    svc = oidc_services(iss)
    admin = {"Authorization": f"Bearer {iss.token(ADMIN, AUD)}"}
    team = {"apiVersion": "ferry/v1", "kind": "Team", "metadata": {"name": "admins"},
            "spec": {"members": [ADMIN], "admins": [ADMIN]}}
    assert router.dispatch(svc, "POST", "/v1/apply", {}, admin, json.dumps({"manifests": [team]}).encode())[0] == 200
    forged = {"Authorization": f"Bearer {iss.unsigned(ADMIN, AUD)}"}
    team["spec"] = {"members": ["mallory@example.com"], "admins": ["mallory@example.com"]}
    status, _ = router.dispatch(svc, "POST", "/v1/apply", {}, forged, json.dumps({"manifests": [team]}).encode())
    assert status == 401
    assert svc.manifests.get("Team", "admins").model().spec.admins == [ADMIN]  # type: ignore[union-attr]


def test_serverless_authorization_wins_and_never_falls_back(iss: Issuer) -> None:
    """Behind Cloud Run, X-Serverless-Authorization is the header Cloud Run verified; Authorization is
    passed through unchecked then, so it must not be read."""
    svc = oidc_services(iss)
    good, bad = iss.token("ana@example.com", AUD), iss.unsigned(ADMIN, AUD)
    status, body = whoami(svc, {"X-Serverless-Authorization": f"Bearer {good}", "Authorization": f"Bearer {bad}"})
    assert (status, body["user"]) == (200, "ana@example.com")
    status, _ = whoami(svc, {"X-Serverless-Authorization": f"Bearer {bad}", "Authorization": f"Bearer {good}"})
    assert status == 401


def test_the_host_header_is_no_audience(iss: Issuer) -> None:
    """Issue 23, finding 6: the Host header used to add ``https://<Host>`` to the accepted audiences — a
    token minted for another service passed when the request named that service as its Host."""
    token = iss.token("ana@example.com", "https://other-abc123-ew.a.run.app")
    status, _ = whoami(oidc_services(iss), {"Authorization": f"Bearer {token}", "Host": "other-abc123-ew.a.run.app"})
    assert status == 401
    status, body = whoami(oidc_services(iss), {"Authorization": f"Bearer {iss.token('ana@example.com', AUD)}",
                                              "Host": "other-abc123-ew.a.run.app"})
    assert (status, body["user"]) == (200, "ana@example.com")  # a configured audience, whatever the Host


@pytest.mark.parametrize(("aud", "status"), [([AUD], 200), (["https://elsewhere.example", AUD], 200),
                                             ([AUD + "/"], 200), (["https://elsewhere.example"], 401),
                                             ([], 401), ([None, 3], 401), ({"aud": AUD}, 401)])
def test_an_aud_list_is_checked_element_wise(iss: Issuer, aud: object, status: int) -> None:
    """Issue 23, findings 6 and 9: an ``aud`` list holding the right audience was refused (google-auth
    compares the list as a whole); a list without it, or a malformed claim, still is."""
    token = iss.token("ana@example.com", aud)  # type: ignore[arg-type]
    assert whoami(oidc_services(iss), {"Authorization": f"Bearer {token}"})[0] == status


def test_x_ferry_user_means_nothing_in_oidc_mode(iss: Issuer) -> None:
    assert whoami(oidc_services(iss), {"X-Ferry-User": ADMIN})[0] == 401


def test_certificates_are_cached_and_refetched_for_an_unknown_key(iss: Issuer) -> None:
    verifier = TokenVerifier([AUD], iss.certs_url)
    before = len(iss.fetches)
    for _ in range(5):
        assert verifier.verify(iss.token("ana@example.com", AUD)) == "ana@example.com"
    assert len(iss.fetches) - before == 1
    with pytest.raises(Unauthenticated):
        verifier.verify(iss.token("ana@example.com", AUD, kid="rotated"))
    assert len(iss.fetches) - before == 2


def test_operator_callers_are_the_declared_service_accounts(iss: Issuer) -> None:
    sa = "ferry-scheduler@p.iam.gserviceaccount.com"
    svc = oidc_services(iss, operators=(sa,))
    assert whoami(svc, {"Authorization": f"Bearer {iss.token(sa, AUD)}"})[1]["operator"] is True
    assert whoami(svc, {"Authorization": f"Bearer {iss.token('ana@example.com', AUD)}"})[1]["operator"] is False


def test_bearer_reads_one_header() -> None:
    assert bearer({"authorization": "Bearer abc"}) == "abc"
    assert bearer({}) is None
    with pytest.raises(Unauthenticated):
        bearer({"X-Serverless-Authorization": "Token abc", "Authorization": "Bearer good"})


# ------------------------------------------------------------------------------------ fail-closed mode


def test_mode_is_fail_closed() -> None:
    assert mode("", is_deployed=False) == HEADER
    assert mode("oidc", is_deployed=True) == OIDC
    with pytest.raises(IdentityConfigError, match="not set"):
        mode("", is_deployed=True)
    with pytest.raises(IdentityConfigError, match="local stack only"):
        mode("header", is_deployed=True)
    with pytest.raises(IdentityConfigError):
        mode("iap", is_deployed=False)


def test_the_deployed_default_is_not_header() -> None:
    """The finding: FERRY_IDENTITY fell back to trusting X-Ferry-User when cloud_env was missing."""
    with pytest.raises(IdentityConfigError):
        IdentityConfig.from_env({"K_SERVICE": "api"})
    assert IdentityConfig.from_env({}).mode == HEADER


REPO = Path(__file__).resolve().parents[3]


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "functions-framework"
    return subprocess.Popen([str(exe), "--source", str(REPO / "functions" / "main.py"), "--target", "api",
                             "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _free_port() -> int:
    from ferry.dev.emulators import free_port

    return free_port()


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "K_"))}
    return {**env, "FERRY_STORE": "memory", "FERRY_BROKER": "memory", "PYTHONUNBUFFERED": "1"}


def test_a_deployed_function_without_an_identity_mode_refuses_to_start() -> None:
    proc = _serve({**_base_env(), "K_SERVICE": "api"}, _free_port())
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert proc.returncode != 0
    assert b"FERRY_IDENTITY=oidc" in out


def test_a_real_function_process_verifies_tokens(iss: Issuer) -> None:
    port = _free_port()
    proc = _serve({**_base_env(), "K_SERVICE": "api", "FERRY_IDENTITY": "oidc", "FERRY_AUDIENCES": AUD,
                   "FERRY_CERTS_URL": iss.certs_url, "FERRY_ADMINS": ADMIN}, port)
    url = f"http://127.0.0.1:{port}/v1/whoami"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                resp = httpx.get(url, headers={"Authorization": f"Bearer {iss.token('ana@example.com', AUD)}"})
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, "the function did not start"
                time.sleep(0.2)
        assert (resp.status_code, resp.json()["user"]) == (200, "ana@example.com")
        forged = httpx.get(url, headers={"Authorization": f"Bearer {iss.unsigned(ADMIN, AUD)}"})
        assert forged.status_code == 401
        assert httpx.get(url, headers={"X-Ferry-User": ADMIN}).status_code == 401
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_a_deployed_function_without_first_admins_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """FERRY_ADMINS closes the teams; a deployment without it would let anyone declare a team (or the
    admin team) and make themselves its admin. ferry deploy always sets it; a process missing it stops."""
    from ferry.api.identity import IdentityConfigError, check_startup

    monkeypatch.setenv("K_SERVICE", "api")
    monkeypatch.setenv("FERRY_IDENTITY", "oidc")
    monkeypatch.delenv("FERRY_ADMINS", raising=False)
    with pytest.raises(IdentityConfigError, match="FERRY_ADMINS"):
        check_startup()
    monkeypatch.setenv("FERRY_ADMINS", ADMIN)
    assert check_startup() == "oidc"
    monkeypatch.delenv("K_SERVICE")
    monkeypatch.delenv("FERRY_ADMINS")
    assert check_startup() == "oidc"  # locally (no K_SERVICE) teams may stay open
