"""A person in a browser, through Identity-Aware Proxy: the proxy's signed header, verified here.

IAP (in front of the dashboard and the API: a serverless NEG behind a backend service with IAP on,
planned by ``ferry deploy``) signs every request it lets through with a JWT in
``x-goog-iap-jwt-assertion`` (docs/security.md cites Google's "Securing your app with signed headers").
The app verifies it itself — the signature is what makes the header unforgeable if IAP is ever
bypassed or switched off:

- header: ``alg`` ES256, ``kid`` one of IAP's public keys (JWK set at ``IAP_KEYS_URL``);
- payload: ``exp`` in the future and ``iat`` in the past (30 s skew), ``aud`` exactly the backend
  service's (``/projects/NUMBER/global/backendServices/ID``) or App Engine's
  (``/projects/NUMBER/apps/PROJECT``), ``iss`` ``https://cloud.google.com/iap``, an ``email``.

:func:`browser_identity` is the one port the web views use: request headers in, the verified e-mail
out (or :class:`~ferry.errors.Unauthenticated`). The e-mail then meets the same ownership rules as
any other caller.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.errors import InfraError, Unauthenticated

IAP_HEADER = "x-goog-iap-jwt-assertion"
IAP_KEYS_URL = "https://www.gstatic.com/iap/verify/public_key-jwk"
IAP_ISSUER = "https://cloud.google.com/iap"
CLOCK_SKEW_S = 30
KEYS_TTL_S = 3600.0

KeysFetcher = Callable[[str], tuple[Mapping[str, bytes], float]]


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def jwk_to_pem(jwk: Mapping[str, Any]) -> bytes:
    """The PEM public key of one EC P-256 JWK (the format of ``public_key-jwk``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError(f"not an EC P-256 key: kty={jwk.get('kty')!r} crv={jwk.get('crv')!r}")
    x = int.from_bytes(_b64(str(jwk["x"])), "big")
    y = int.from_bytes(_b64(str(jwk["y"])), "big")
    key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fetch_keys(url: str) -> tuple[Mapping[str, bytes], float]:
    """``{kid: PEM public key}`` from IAP's JWK set at ``url``, and how long it may be cached."""
    import httpx

    try:
        resp = httpx.get(url, timeout=10.0)
        resp.raise_for_status()
        keys = {str(k["kid"]): jwk_to_pem(k) for k in resp.json()["keys"]}
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise InfraError(f"cannot fetch IAP's public keys from {url}: {exc}") from exc
    ttl = KEYS_TTL_S
    for part in resp.headers.get("cache-control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "max-age" and value.isdigit():
            ttl = min(float(value), 6 * 3600.0)
    return keys, ttl


@dataclass(frozen=True)
class IapConfig:
    """Where IAP's keys are and which audience this deployment's backend service has ("" = IAP off)."""

    audience: str = ""
    keys_url: str = IAP_KEYS_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IapConfig:
        return cls(env.get("FERRY_IAP_AUDIENCE", "").strip(), env.get("FERRY_IAP_KEYS_URL") or IAP_KEYS_URL)


class IapVerifier:
    """Verifies IAP's signed header (ES256) and returns the person's e-mail.

    Keys are cached for their max-age and re-fetched once on an unknown ``kid`` (key rotation).
    """

    def __init__(self, config: IapConfig, fetch: KeysFetcher = fetch_keys, clock_skew_s: int = CLOCK_SKEW_S) -> None:
        self.config = config
        self._fetch = fetch
        self.clock_skew_s = clock_skew_s
        self._keys: Mapping[str, bytes] = {}
        self._expires = 0.0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.config.audience)

    def _key(self, kid: str) -> bytes:
        with self._lock:
            if time.monotonic() >= self._expires or kid not in self._keys:
                self._keys, ttl = self._fetch(self.config.keys_url)
                self._expires = time.monotonic() + ttl
            key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("the IAP assertion is signed with a key IAP does not publish")
        return key

    def verify(self, assertion: str) -> str:
        """The verified e-mail of an ``x-goog-iap-jwt-assertion``; raises Unauthenticated naming what failed."""
        from google.auth import exceptions as gexc
        from google.auth import jwt

        if not self.enabled:
            raise Unauthenticated("this deployment has no IAP audience (FERRY_IAP_AUDIENCE)")
        try:
            header = json.loads(_b64(assertion.split(".")[0]))
        except (ValueError, IndexError):
            raise Unauthenticated("the IAP assertion is not a JWT") from None
        if not isinstance(header, dict) or header.get("alg") != "ES256":
            raise Unauthenticated("the IAP assertion is not ES256-signed")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthenticated("the IAP assertion names no key (kid)")
        try:
            claims = jwt.decode(assertion, certs={kid: self._key(kid)}, audience=self.config.audience,
                                clock_skew_in_seconds=self.clock_skew_s)
        except (gexc.GoogleAuthError, ValueError) as exc:
            text = str(exc).lower()
            why = next((w for w in ("expired", "audience", "signature", "too early") if w in text), "malformed")
            raise Unauthenticated(f"the IAP assertion does not verify: {why}") from None
        if claims.get("iss") != IAP_ISSUER:
            raise Unauthenticated("the IAP assertion was not issued by IAP")
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise Unauthenticated("the IAP assertion carries no e-mail")
        return email.removeprefix("accounts.google.com:")


def assertion(headers: Mapping[str, str]) -> str | None:
    """The IAP assertion of a request, if it carries one."""
    for k, v in headers.items():
        if k.lower() == IAP_HEADER:
            return v.strip() or None
    return None


def browser_identity(headers: Mapping[str, str], verifier: IapVerifier) -> str:
    """The e-mail of the person whose browser IAP let through (the port the web views build on).

    Raises Unauthenticated when the request carries no assertion or one that does not verify.
    """
    token = assertion(headers)
    if token is None:
        raise Unauthenticated(f"a browser request must come through Identity-Aware Proxy ({IAP_HEADER} missing)")
    return verifier.verify(token)
