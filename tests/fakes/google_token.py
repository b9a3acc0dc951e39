"""A local stand-in for Google's OAuth 2.0 token endpoint (https://oauth2.googleapis.com/token), the one
the credentials of ``gcloud auth application-default login`` (``authorized_user``) and of a service
account key refresh against — both files name it in ``token_uri``, which is how the CLI under test is
pointed here. It answers as Google's does (docs/security.md cites the references):

- ``grant_type=refresh_token`` (a person): the client id/secret and refresh token must match a known
  login; the answer carries an access token and, the login having the ``openid`` scope, an ``id_token``
  whose audience is the OAuth client id. A revoked refresh token is ``400 invalid_grant``.
- ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` (a service account key): the assertion is
  verified with the account's public key; a ``target_audience`` claim asks for an ``id_token`` for it.

ID tokens are signed by :class:`fakes.oidc.Issuer`, whose certificates the API verifies against.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fakes.oidc import Issuer

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GCLOUD_ADC_CLIENT_ID = "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com"


@dataclass
class TokenEndpoint:
    url: str
    issuer: Issuer
    users: dict[str, str] = field(default_factory=dict)  # refresh token -> e-mail
    service_accounts: dict[str, bytes] = field(default_factory=dict)  # e-mail -> public certificate PEM
    revoked: set[str] = field(default_factory=set)
    lifetime_s: int = 3600
    grants: list[dict[str, Any]] = field(default_factory=list)  # what was asked, in order

    def authorized_user_file(self, path: Path, email: str, client_id: str = GCLOUD_ADC_CLIENT_ID) -> Path:
        """What ``gcloud auth application-default login`` writes, pointed at this endpoint."""
        refresh = f"1//refresh-{len(self.users)}-{email}"
        self.users[refresh] = email
        path.write_text(json.dumps({"type": "authorized_user", "client_id": client_id, "client_secret": "d-FL95Q19q7MQmFpd7hHD0Ty",
                                    "refresh_token": refresh, "token_uri": self.url, "account": email}))
        return path

    def service_account_file(self, path: Path, email: str) -> Path:
        """A service account key file (as the console downloads it), pointed at this endpoint."""
        from fakes.oidc import _key_and_cert

        key_pem, cert_pem = _key_and_cert()
        self.service_accounts[email] = cert_pem
        path.write_text(json.dumps({"type": "service_account", "project_id": "p", "private_key_id": "k1",
                                    "private_key": key_pem.decode(), "client_email": email, "client_id": "1",
                                    "token_uri": self.url}))
        return path


@contextmanager
def token_endpoint(issuer: Issuer) -> Iterator[TokenEndpoint]:
    holder: dict[str, TokenEndpoint] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            ep = holder["ep"]
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            ep.grants.append({"at": time.time(), **{k: v for k, v in form.items() if k != "client_secret"}})
            status, body = answer(ep, form)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["ep"] = TokenEndpoint(f"http://127.0.0.1:{server.server_address[1]}/token", issuer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["ep"]
    finally:
        server.shutdown()
        server.server_close()


def answer(ep: TokenEndpoint, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    from google.auth import jwt

    grant = form.get("grant_type")
    if grant == "refresh_token":
        email = ep.users.get(form.get("refresh_token", ""))
        if email is None or form.get("refresh_token") in ep.revoked:
            return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
        return 200, {"access_token": f"ya29.fake-{len(ep.grants)}", "expires_in": ep.lifetime_s, "token_type": "Bearer",
                     "scope": "openid https://www.googleapis.com/auth/userinfo.email "
                              "https://www.googleapis.com/auth/cloud-platform",
                     "id_token": ep.issuer.token(email, form["client_id"], expires_in=ep.lifetime_s,
                                                 azp=form["client_id"])}
    if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
        unverified = jwt.decode(form.get("assertion", ""), verify=False)
        cert = ep.service_accounts.get(str(unverified.get("iss")))
        if cert is None:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        claims = jwt.decode(form["assertion"], certs=cert.decode(), audience=[ep.url, GOOGLE_TOKEN_URI])
        if not claims.get("target_audience"):
            return 400, {"error": "invalid_request", "error_description": "no target_audience"}
        return 200, {"id_token": ep.issuer.token(str(claims["iss"]), str(claims["target_audience"]),
                                                 expires_in=ep.lifetime_s)}
    return 400, {"error": "unsupported_grant_type"}


def routed_transport(ep: TokenEndpoint) -> Any:
    """google-auth's requests transport with Google's token URL routed to ``ep`` (google-auth always
    refreshes a person's ``authorized_user`` credentials at Google's URL, whatever the file says)."""
    import google.auth.transport.requests

    class Routed(google.auth.transport.requests.Request):
        def __call__(self, url: str, *args: Any, **kwargs: Any) -> Any:
            return super().__call__(ep.url if url == GOOGLE_TOKEN_URI else url, *args, **kwargs)

    return Routed()
