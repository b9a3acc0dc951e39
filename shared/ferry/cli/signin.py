"""Signing the CLI in to a deployed Ferry: a Google ID token from the person's ordinary gcloud credentials.

Every deployed function requires a Google-signed ID token (docs/security.md). Where it comes from, first
match wins:

1. ``FERRY_ID_TOKEN``: a token minted elsewhere (``gcloud auth print-identity-token``), used as is.
2. Application Default Credentials (``google.auth.default()``), by their type:

   - a person (``gcloud auth application-default login``, type ``authorized_user``): the refresh grant
     returns an ID token for the OAuth client the login used (its audience is that client id, which
     the deployment lists in its audiences);
   - a service account key (``GOOGLE_APPLICATION_CREDENTIALS``): a token for the API's URL, signed by
     Google's token endpoint from a JWT assertion;
   - impersonation (``gcloud auth application-default login --impersonate-service-account=SA``, CI):
     IAM Credentials' ``generateIdToken`` for the API's URL, with the e-mail claim;
   - on Google Cloud (metadata server): the instance's service account, for the API's URL.

Tokens are cached per user under ``$XDG_CACHE_HOME/ferry`` (mode 0600) until a minute before they
expire, then minted again. When no token can be had the CLI stops with exit 5 naming what to run —
it never calls a deployment without one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ferry.errors import Unauthenticated

TOKEN_ENV = "FERRY_ID_TOKEN"
AUDIENCE_ENV = "FERRY_AUDIENCE"  # the audience service-account tokens are minted for (default: the API URL)
AUTH_ENV = "FERRY_AUTH"  # auto (default): loopback URLs take no token; idtoken: always; none: never
REFRESH_MARGIN_S = 60
LOGIN = "gcloud auth application-default login"
CI_LOGIN = (f"{LOGIN} --impersonate-service-account=SA_EMAIL, or GOOGLE_APPLICATION_CREDENTIALS=key.json, "
            f"or {TOKEN_ENV}=$(gcloud auth print-identity-token)")


class SignInRequired(Unauthenticated):
    """No ID token could be had for a deployed Ferry: the message names what to run (exit 5)."""

    code = "sign_in_required"


def needs_token(api: str) -> bool:
    """Whether calls to ``api`` carry an ID token: never for the local stack (loopback), always otherwise;
    ``FERRY_AUTH=idtoken|none`` decides explicitly (e.g. a deployment reached through a local tunnel)."""
    chosen = os.environ.get(AUTH_ENV, "auto").strip().lower()
    if chosen in ("idtoken", "none"):
        return chosen == "idtoken"
    if os.environ.get("FERRY_NO_AUTH"):
        return False
    return not api.startswith(("http://127.", "http://localhost", "http://[::1]"))


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (only to read its expiry and e-mail; the server verifies)."""
    try:
        part = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ferry"


class TokenCache:
    """ID tokens by (credentials, audience), in one JSON file only the user can read."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "id-tokens.json"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str, now: float) -> str | None:
        entry = self._load().get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            return None
        return entry["token"] if float(entry.get("exp", 0)) - REFRESH_MARGIN_S > now else None

    def put(self, key: str, token: str, now: float) -> None:
        data = {k: v for k, v in self._load().items()
                if isinstance(v, dict) and float(v.get("exp", 0)) > now}  # drop the expired
        data[key] = {"token": token, "exp": claims(token).get("exp", now + 300)}
        self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)

    def drop(self, key: str) -> None:
        data = self._load()
        if data.pop(key, None) is not None:
            self._write(data)


CredentialsLoader = Callable[[], tuple[Any, Any]]


def _default_credentials() -> tuple[Any, Any]:
    import warnings

    import google.auth

    with warnings.catch_warnings():  # "no quota project": irrelevant to minting an ID token
        warnings.simplefilter("ignore")
        return google.auth.default()  # type: ignore[no-untyped-call]


def google_transport() -> Any:
    """The HTTP transport to Google's token endpoints (google-auth's ``requests`` one; tests route it
    to local fakes — a person's ``authorized_user`` credentials always use Google's token URL)."""
    import google.auth.transport.requests

    return google.auth.transport.requests.Request()


def _identity(creds: Any) -> str:
    """A stable name of the credentials (never a secret): the cache key's first half."""
    for attr in ("service_account_email", "signer_email", "client_id"):
        value = getattr(creds, attr, None)
        if isinstance(value, str) and value:
            account = getattr(creds, "account", "") or ""
            refresh = getattr(creds, "refresh_token", "") or ""
            digest = hashlib.sha256(f"{value}|{account}|{refresh}".encode()).hexdigest()[:16]
            return f"{type(creds).__name__}:{value}:{digest}"
    return type(creds).__name__


class SignIn:
    """Gets the ID token to send to a deployed Ferry at ``api`` (see the module's docstring)."""

    def __init__(self, cache: TokenCache | None = None, load: CredentialsLoader = _default_credentials,
                 clock: Callable[[], float] = time.time, transport: Callable[[], Any] | None = None) -> None:
        self.cache = cache or TokenCache()
        self.load = load
        self.clock = clock
        self.transport = transport or google_transport
        self.key: str | None = None  # the cache entry of the last token handed out

    def token(self, api: str) -> str:
        """An ID token for ``api``; raises SignInRequired naming what to run."""
        now = self.clock()
        explicit = os.environ.get(TOKEN_ENV, "").strip()
        if explicit:
            exp = claims(explicit).get("exp")
            if isinstance(exp, int | float) and exp <= now:
                raise SignInRequired(f"{TOKEN_ENV} has expired: mint a new one, e.g. "
                                     f"{TOKEN_ENV}=$(gcloud auth print-identity-token)", {"hint": CI_LOGIN})
            return explicit
        from google.auth import exceptions as gexc

        try:
            creds, _ = self.load()
        except gexc.DefaultCredentialsError:
            raise SignInRequired(f"not signed in to Google Cloud: run `{LOGIN}` (CI: {CI_LOGIN})",
                                 {"api": api, "hint": "then run this command again; `ferry whoami` shows who you are"}) from None
        audience = os.environ.get(AUDIENCE_ENV, "").strip() or api.rstrip("/")
        self.key = f"{_identity(creds)}|{audience}"
        cached = self.cache.get(self.key, now)
        if cached:
            return cached
        try:
            minted = self._mint(creds, audience)
        except gexc.RefreshError as exc:
            raise SignInRequired(f"your Google credentials could not be refreshed ({_short(exc)}): run `{LOGIN}` again",
                                 {"api": api, "hint": f"CI: {CI_LOGIN}"}) from None
        except gexc.TransportError as exc:
            from ferry.errors import InfraError

            raise InfraError(f"cannot reach Google's token endpoint to sign in: {exc}") from exc
        self.cache.put(self.key, minted, now)
        return minted

    def forget(self) -> None:
        """Drop the token last handed out (the API said it is no longer valid)."""
        if self.key:
            self.cache.drop(self.key)

    def _mint(self, creds: Any, audience: str) -> str:
        from google.auth import compute_engine, impersonated_credentials
        from google.oauth2 import credentials as user_credentials
        from google.oauth2 import service_account

        request = self.transport()
        if isinstance(creds, user_credentials.Credentials):
            creds.refresh(request)
            if not creds.id_token:
                raise SignInRequired(f"your gcloud login carries no ID token (no openid scope): run `{LOGIN}`")
            return str(creds.id_token)
        if isinstance(creds, impersonated_credentials.Credentials):
            idc: Any = impersonated_credentials.IDTokenCredentials(creds, target_audience=audience, include_email=True)
        elif isinstance(creds, service_account.Credentials):
            idc = service_account.IDTokenCredentials(creds.signer, creds.service_account_email,
                                                     creds._token_uri, target_audience=audience)  # noqa: SLF001
        elif isinstance(creds, compute_engine.Credentials):
            idc = compute_engine.IDTokenCredentials(request, audience, use_metadata_identity_endpoint=True)
        else:
            raise SignInRequired(f"{type(creds).__name__} credentials cannot mint an ID token: run `{LOGIN}` "
                                 f"(CI: {CI_LOGIN})")
        idc.refresh(request)
        return str(idc.token)


def _short(exc: Exception) -> str:
    text = str(exc.args[0] if exc.args else exc)
    return text[:200]
