"""A local stand-in for Identity-Aware Proxy's signing: an EC P-256 key whose public half is served as a
JWK set from a real HTTP server (like https://www.gstatic.com/iap/verify/public_key-jwk), and real ES256
assertions signed with it (google-auth's ES256 signer), with IAP's claims (docs/security.md cites
"Securing your app with signed headers"). ``with iap() as proxy: proxy.assertion(email=...)``."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import crypt, jwt

AUDIENCE = "/projects/123456789012/global/backendServices/4242424242"


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def new_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _jwk(key_pem: bytes, kid: str) -> dict[str, str]:
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    nums = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid, "x": _b64(nums.x), "y": _b64(nums.y)}


@dataclass
class Proxy:
    keys_url: str
    kid: str
    key_pem: bytes
    fetches: list[float] = field(default_factory=list)

    def assertion(self, email: str = "ana@example.com", audience: str = AUDIENCE, *,
                  issuer: str = "https://cloud.google.com/iap", expires_in: int = 600,
                  issued_at: float | None = None, key_pem: bytes | None = None, kid: str | None = None,
                  **extra: Any) -> str:
        now = time.time() if issued_at is None else issued_at
        claims = {"iss": issuer, "aud": audience, "sub": "accounts.google.com:1234", "email": email,
                  "hd": email.partition("@")[2], "iat": int(now), "exp": int(now + expires_in), **extra}
        signer = crypt.ES256Signer.from_string(key_pem or self.key_pem, kid or self.kid)
        return jwt.encode(signer, claims).decode()


@contextmanager
def iap() -> Iterator[Proxy]:
    key_pem = new_key()
    kid = "iap-test-kid"
    holder: dict[str, Proxy] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            holder["proxy"].fetches.append(time.time())
            data = json.dumps({"keys": [_jwk(key_pem, kid)]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=3600")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["proxy"] = Proxy(f"http://127.0.0.1:{server.server_address[1]}/iap/verify/public_key-jwk", kid, key_pem)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["proxy"]
    finally:
        server.shutdown()
        server.server_close()
