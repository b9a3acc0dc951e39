"""A local stand-in for Google's ID-token issuer: an RSA key, its X.509 certificate served as
``{kid: PEM}`` from a real HTTP server (like https://www.googleapis.com/oauth2/v1/certs), and real
RS256 tokens signed with it (google-auth's signer). ``with issuer() as iss: iss.token(email=...)``."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt


def _key_and_cert() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry-test-issuer")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem_key, cert.public_bytes(serialization.Encoding.PEM)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Issuer:
    certs_url: str
    kid: str
    key_pem: bytes
    cert_pem: bytes
    fetches: list[float] = field(default_factory=list)

    def token(self, email: str = "ana@example.com", audience: str = "https://api.example", *,
              issuer: str = "https://accounts.google.com", email_verified: Any = True, expires_in: int = 3600,
              issued_at: float | None = None, key_pem: bytes | None = None, kid: str | None = None,
              **extra: Any) -> str:
        now = time.time() if issued_at is None else issued_at
        claims = {"iss": issuer, "aud": audience, "sub": "1234", "email": email, "email_verified": email_verified,
                  "iat": int(now), "exp": int(now + expires_in), **extra}
        signer = crypt.RSASigner.from_string(key_pem or self.key_pem, kid or self.kid)
        return jwt.encode(signer, claims).decode()

    def unsigned(self, email: str, audience: str = "https://api.example") -> str:
        """``alg: none`` with a plausible payload (what the old code trusted)."""
        now = int(time.time())
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        payload = _b64(json.dumps({"iss": "https://accounts.google.com", "aud": audience, "email": email,
                                   "email_verified": True, "iat": now, "exp": now + 3600}).encode())
        return f"{header}.{payload}.x"


@contextmanager
def issuer() -> Iterator[Issuer]:
    key_pem, cert_pem = _key_and_cert()
    kid = "test-kid-1"
    holder: dict[str, Issuer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            holder["issuer"].fetches.append(time.time())
            data = json.dumps({kid: cert_pem.decode()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=300")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["issuer"] = Issuer(f"http://127.0.0.1:{server.server_address[1]}/oauth2/v1/certs", kid, key_pem, cert_pem)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["issuer"]
    finally:
        server.shutdown()
        server.server_close()


def other_key() -> bytes:
    """A private key the issuer never published (for forged tokens)."""
    return _key_and_cert()[0]
