"""What every CLI command shares: --json, --api/FERRY_API, --as, the API client, exit codes, tables."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.table import Table

from ferry.errors import FerryError, InfraError, from_dict

DEFAULT_API = "http://127.0.0.1:8700"


def ferry_home() -> Path:
    """Where the local stack keeps its state (ports, pids, logs): FERRY_HOME or ./.ferry."""
    return Path(os.environ.get("FERRY_HOME", ".ferry")).resolve()


def default_api() -> str:
    if os.environ.get("FERRY_API"):
        return os.environ["FERRY_API"]
    state = ferry_home() / "state.json"
    if state.exists():
        try:
            url = json.loads(state.read_text()).get("api_url")
            if url:
                return str(url)
        except ValueError:
            pass
    return DEFAULT_API


class Client:
    """The API client: JSON in, JSON out, errors rebuilt as FerryError."""

    def __init__(self, base: str, user: str | None = None, timeout: float = 120.0) -> None:
        self.base = base.rstrip("/")
        headers = {"User-Agent": "ferry-cli"}
        if user:
            headers["X-Ferry-User"] = user
        if os.environ.get("FERRY_NOW"):  # local time travel; honoured only by a stack that allows it
            headers["X-Ferry-Now"] = os.environ["FERRY_NOW"]
        token = _id_token(self.base)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        secret = _stack_secret(self.base)
        if secret:  # the local stack's operational routes (tick, evaluate, ...) take its secret
            headers["X-Ferry-Stack-Secret"] = secret
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
                content: bytes | None = None, content_type: str | None = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            if content is not None:
                resp = self.http.request(method, path, content=content, params=params,
                                         headers={"Content-Type": content_type or "application/octet-stream"})
            else:
                resp = self.http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise InfraError(f"cannot reach the Ferry API at {self.base}: {exc} (is the stack up? `ferry dev up`)") from exc
        try:
            data = resp.json()
        except ValueError:
            data = {"error": {"code": "internal", "message": resp.text[:500] or f"HTTP {resp.status_code}"}}
        if resp.status_code >= 400:
            raise from_dict(data, resp.status_code)
        return data

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, body if body is not None else {}, params=params)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _stack_secret(base: str) -> str | None:
    """The secret of the local stack (found from FERRY_HOME / ./.ferry) when ``base`` is one of its URLs."""
    try:
        state = json.loads((ferry_home() / "state.json").read_text())
    except (OSError, ValueError):
        return None
    urls = {state.get("api_url")} | {c.get("url") for c in state.get("components", []) if isinstance(c, dict)}
    secret = state.get("stack_secret")
    return str(secret) if secret and base.rstrip("/") in {u.rstrip("/") for u in urls if u} else None


def _id_token(base: str) -> str | None:
    """In the cloud, functions require an ID token for their URL (docs/metadata-language.md); locally none is needed."""
    if base.startswith(("http://127.", "http://localhost", "http://[::1]")) or os.environ.get("FERRY_NO_AUTH"):
        return None
    try:
        import google.auth.transport.requests
        import google.oauth2.id_token

        return str(google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), base))
    except Exception:  # no credentials: the call goes out without one and the server says 401/403
        return None


@dataclass
class Ctx:
    api: str
    json: bool
    user: str | None

    @functools.cached_property
    def client(self) -> Client:
        return Client(self.api, self.user)

    def emit(self, data: Any, human: Callable[[Any], None] | None = None) -> None:
        if self.json or human is None:
            click.echo(json.dumps(data, indent=2, default=str))
        else:
            human(data)


console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None,
          styles: dict[str, Callable[[Any], str]] | None = None) -> None:
    """Print rows as a table for people (``--json`` prints the data instead)."""
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c.upper().replace("_", " "))
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            text = "" if v is None else (", ".join(map(str, v)) if isinstance(v, list) else str(v))
            style = (styles or {}).get(c)
            cells.append(f"[{style(v)}]{text}[/]" if style and style(v) else text)
        t.add_row(*cells)
    console.print(t)
    if not rows:
        console.print("(none)")


def command(group: click.Group, name: str | None = None, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """Declare a CLI command with --json, --api and --as; it receives a Ctx as ``ctx``.

    FerryErrors become a message on stderr and the exit code of docs/architecture.md.
    """
    def wrap(fn: Callable[..., Any]) -> Any:
        @group.command(name, **kwargs)
        @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
        @click.option("--api", default=None, help="Ferry API base URL (env FERRY_API; default: the local stack).")
        @click.option("--as", "user", default=None, envvar="FERRY_USER", help="Act as this user (local stack).")
        @functools.wraps(fn)
        def run(as_json: bool, api: str | None, user: str | None, **params: Any) -> None:
            ctx = Ctx(api or default_api(), as_json, user)
            try:
                fn(ctx=ctx, **params)
            except FerryError as exc:
                fail(exc, as_json)
        return run
    return wrap


def fail(exc: FerryError, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(exc.to_dict(), indent=2, default=str))
    else:
        click.secho(f"error: {exc.message}", fg="red", err=True)
        details = exc.details
        if isinstance(details, list):
            for d in details:
                if isinstance(d, dict):
                    where = d.get("file", "")
                    if "document" in d:
                        where += f"[{d['document']}]"
                    who = f" {d['kind']}/{d['name']}" if d.get("kind") and d.get("name") else ""
                    field = d.get("field", "")
                    click.echo(f"  {where}{who} {field}: {d.get('reason', d)}".rstrip(), err=True)
                else:
                    click.echo(f"  {d}", err=True)
        elif isinstance(details, dict) and details:
            for k, v in details.items():
                if k != "log_tail":
                    click.echo(f"  {k}: {v}", err=True)
            if details.get("log_tail"):
                click.echo(str(details["log_tail"]), err=True)
    sys.exit(exc.exit_code)
