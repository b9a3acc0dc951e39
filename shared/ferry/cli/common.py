"""What every CLI command shares: the global options (``-o table|json|yaml``/``--json``, ``--api``/FERRY_API,
``--as``/FERRY_USER — anywhere on the line), finding the local stack, the API client, exit codes, tables."""

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
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ferry import humane
from ferry.cli.signin import SignIn, needs_token
from ferry.errors import FerryError, InfraError, from_dict

HOME_DIR = ".ferry"
ANONYMOUS_HINT = "--as USER or FERRY_USER=USER"


def ferry_home(start: Path | None = None) -> Path:
    """Where the local stack keeps its state: FERRY_HOME, else the nearest ``.ferry`` directory in the
    current directory or one of its parents (as git finds ``.git``), else ``./.ferry``."""
    given = STACK_OVERRIDE or os.environ.get("FERRY_HOME")
    if given:
        return Path(given).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / HOME_DIR).is_dir():
            return d / HOME_DIR
    return here / HOME_DIR


STACK_OVERRIDE: str | None = None  # --stack HOME (set by the root command for this invocation)


class NoStack(InfraError):
    """The CLI found no running local stack to talk to (and no --api was given)."""

    code = "no_stack"


@dataclass(frozen=True)
class Stack:
    """The local stack the CLI talks to: its home, its recorded state and how it was found."""

    home: Path
    state: dict[str, Any]
    found: str


def _read_state(home: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((home / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _explicit_home() -> tuple[Path, str] | None:
    given = STACK_OVERRIDE or os.environ.get("FERRY_HOME")
    if not given:
        return None
    home = Path(given).expanduser().resolve()
    if (home / HOME_DIR).is_dir() and not (home / "state.json").exists():  # --stack ~/repo means ~/repo/.ferry
        home = home / HOME_DIR
    return home, "--stack" if STACK_OVERRIDE else "FERRY_HOME"


def locate_stack() -> Stack | None:
    """The running local stack for this command: ``--stack``/FERRY_HOME; else the nearest ``.ferry`` here
    or above (as git finds ``.git``; a stopped one there means none); else the one stack in the per-user
    registry of running stacks (ferry.dev.registry). Several running stacks and no way to choose is a
    NoStack naming them."""
    explicit = _explicit_home()
    if explicit is not None:
        state = _read_state(explicit[0])
        return Stack(explicit[0], state, explicit[1]) if state else None
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / HOME_DIR).is_dir():
            state = _read_state(d / HOME_DIR)
            return Stack(d / HOME_DIR, state, "this folder") if state else None
    from ferry.dev import registry

    alive = registry.running()
    if len(alive) == 1:
        return Stack(alive[0][0], alive[0][1], "the registry of running stacks")
    if len(alive) > 1:
        raise NoStack(f"{len(alive)} local stacks are running and none is in this folder: name one with "
                      f"--stack HOME (or FERRY_HOME=HOME)", {"stacks": [str(h) for h, _ in alive]})
    return None


def stack_home() -> Path:
    """Where the stack of this command lives (located, else where ``ferry dev up`` would put it)."""
    found = locate_stack()
    return found.home if found else ferry_home()


def stack_state() -> dict[str, Any]:
    """The located local stack's recorded state (``{}`` when there is none)."""
    try:
        found = locate_stack()
    except NoStack:
        return {}
    return found.state if found else {}


NO_STACK_HINT = ("start one with `ferry dev up` in Ferry's repository (then any folder finds it), name one with "
                 "--stack HOME, or talk to a deployment with --api URL")


def default_api() -> str:
    """FERRY_API, else the located local stack's API; never a guess at a default port (NoStack, exit 4)."""
    if os.environ.get("FERRY_API"):
        return os.environ["FERRY_API"]
    found = locate_stack()
    if found is None or not found.state.get("api_url"):
        explicit = _explicit_home()
        where = f"in {explicit[0]}" if explicit else "in this folder or the registry of running stacks"
        raise NoStack(f"no local stack is running {where}: {NO_STACK_HINT}")
    if found.found == "the registry of running stacks":
        click.echo(f"(local stack {found.home}, API {found.state['api_url']})", err=True)
    return str(found.state["api_url"])


class Client:
    """The API client: JSON in, JSON out, errors rebuilt as FerryError."""

    def __init__(self, base: str, user: str | None = None, timeout: float = 120.0) -> None:
        self.base = base.rstrip("/")
        headers = {"User-Agent": "ferry-cli"}
        if user:
            headers["X-Ferry-User"] = user
        if os.environ.get("FERRY_NOW"):  # local time travel; honoured only by a stack that allows it
            headers["X-Ferry-Now"] = os.environ["FERRY_NOW"]
        self.signin: SignIn | None = None
        if needs_token(self.base):  # a deployment: a Google ID token, or exit 5 naming what to run
            self.signin = SignIn()
            headers["Authorization"] = f"Bearer {self.signin.token(self.base)}"
        secret = _stack_secret(self.base)
        if secret:  # the local stack's operational routes (tick, evaluate, ...) take its secret
            headers["X-Ferry-Stack-Secret"] = secret
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
                content: bytes | None = None, content_type: str | None = None, retried: bool = False) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            if content is not None:
                resp = self.http.request(method, path, content=content, params=params,
                                         headers={"Content-Type": content_type or "application/octet-stream"})
            else:
                resp = self.http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise InfraError(f"cannot reach the Ferry API at {self.base}: {exc} (is the stack up? `ferry dev up`)") from exc
        if resp.status_code == 401 and self.signin is not None and not retried:
            # the cached token was refused (revoked, or the clock moved): mint a new one, once
            self.signin.forget()
            self.http.headers["Authorization"] = f"Bearer {self.signin.token(self.base)}"
            return self.request(method, path, body, params, content, content_type, retried=True)
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

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=params)


def _stack_secret(base: str) -> str | None:
    """The secret of the located local stack when ``base`` is one of its URLs (never sent elsewhere)."""
    state = stack_state()
    urls = {state.get("api_url")} | {c.get("url") for c in state.get("components", []) if isinstance(c, dict)}
    secret = state.get("stack_secret")
    return str(secret) if secret and base.rstrip("/") in {u.rstrip("/") for u in urls if u} else None


OUTPUTS = ("table", "json", "yaml", "csv")  # csv: ferry query


@dataclass
class Ctx:
    """What a command gets: where the API is, who the caller is (and why), how to print."""

    api_option: str | None
    output: str = "table"
    user: str | None = None
    user_source: str = "none"

    @functools.cached_property
    def api(self) -> str:
        """The API this command talks to (resolved when first needed: offline commands need none)."""
        return self.api_option or default_api()

    @property
    def json(self) -> bool:
        """Machine-readable output was asked for (``-o json``, ``--json`` or ``-o yaml``)."""
        return self.output != "table"

    @functools.cached_property
    def client(self) -> Client:
        return Client(self.api, self.user)

    def emit(self, data: Any, human: Callable[[Any], None] | None = None) -> None:
        if self.output == "yaml":
            click.echo(yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True), nl=False)
        elif self.output == "json" or human is None:
            click.echo(json.dumps(data, indent=2, default=str))
        else:
            human(data)


def _plain(data: Any) -> Any:
    """JSON-compatible values only (what yaml.safe_dump takes), keeping mapping order."""
    return json.loads(json.dumps(data, default=str))


@dataclass
class GlobalOptions:
    output: str = "table"
    api: str | None = None
    user: str | None = None


def resolve_user(given: str | None) -> tuple[str | None, str]:
    """(the caller, where that came from): ``--as``/FERRY_USER, else the default ``ferry dev up``
    recorded for the local stack this CLI talks to."""
    if given:
        return given, "--as/FERRY_USER"
    state = stack_state()
    default = state.get("default_user")
    if default and os.environ.get("FERRY_API") in (None, "", state.get("api_url")):
        return str(default), "the local stack's default (recorded by `ferry dev up`)"
    return None, "none"


def make_ctx() -> Ctx:
    root = click.get_current_context(silent=True)
    opts = root.find_root().obj if root is not None else None
    if not isinstance(opts, GlobalOptions):  # a command invoked outside ``ferry`` (tests)
        opts = GlobalOptions(user=os.environ.get("FERRY_USER") or None)
    user, source = resolve_user(opts.user)
    return Ctx(opts.api, opts.output, user, source)


console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


# Columns whose values people copy into the next command: never cut, never wrapped.
ID_COLUMNS = frozenset({"id", "name", "endpoint", "workflow", "instance", "partition", "parameter", "event_type",
                        "event_id", "backfill", "component", "job", "subscription", "team", "channel", "kind"})
SQUEEZED_WIDTH = 10  # what another column may shrink to (its text wraps) before columns are dropped


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None,
          styles: dict[str, Callable[[Any], str]] | None = None) -> None:
    """Print rows as a table for people (``--json`` prints the data instead).

    It fits the terminal: id-like columns (ID_COLUMNS) keep their whole values; the others wrap, and
    when even that does not fit, the last of them are dropped (named under the table; ``-o json`` has all).
    """
    texts = {c: [escape(humane.text(r.get(c))) for r in rows] for c in columns}
    header = {c: c.upper().replace("_", " ") for c in columns}
    natural = {c: max([len(header[c])] + [len(t) for t in texts[c]]) for c in columns}

    def need(cols: Sequence[str]) -> int:  # borders and padding: 3 per column, 1 at the end
        return sum((natural[c] if c in ID_COLUMNS else min(natural[c], SQUEEZED_WIDTH)) + 3 for c in cols) + 1

    shown, hidden = list(columns), list[str]()
    while need(shown) > console.width:
        droppable = [c for c in shown[1:] if c not in ID_COLUMNS]
        if not droppable:
            break
        drop = next((c for c in reversed(droppable) if c != "state"), droppable[-1])  # a state goes last
        shown.remove(drop)
        hidden.insert(0, drop)
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in shown:
        if c in ID_COLUMNS:
            t.add_column(header[c], no_wrap=True, min_width=natural[c])
        else:
            t.add_column(header[c], overflow="fold")
    for i, r in enumerate(rows):
        cells = []
        for c in shown:
            v, text = r.get(c), texts[c][i]
            style = (styles or {}).get(c)
            cells.append(f"[{style(v)}]{text}[/]" if style and style(v) else text)
        t.add_row(*cells)
    console.print(t)
    if not rows:
        console.print("(none)")
    if hidden:
        hidden.sort(key=list(columns).index)
        console.print(f"(not shown at this width: {', '.join(header[c].lower() for c in hidden)}; -o json has them)")


GLOBAL_HELP = ("Global options, anywhere on the line: -o table|json|yaml|csv (--json), --api URL, --stack HOME, "
               "--as USER.")


def examples_epilog(*examples: str, formats: str = "") -> str:
    lines = "\n".join(f"  $ {e}" for e in examples)
    head = f"{formats}\n\n" if formats else ""
    return f"{head}\b\nExample{'s' if len(examples) > 1 else ''}:\n{lines}\n\n{GLOBAL_HELP}"


def parameter_formats(name: str = "PARAMETER") -> str:
    from ferry.domain.periods import PARAMETER_FORMATS

    return f"{name} names one period of the partitioning: {PARAMETER_FORMATS}."


def command(group: click.Group, name: str | None = None, example: str | tuple[str, ...] = (),
            formats: str = "", **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """Declare a CLI command; it receives a Ctx as ``ctx`` (built from the global options).

    ``example``: one or more command lines shown under the help. FerryErrors become one message on
    stderr and the exit code of the error model (docs/architecture.md: 0 ok, 2 usage, 3 rejected, 4 server/infra, 5 authz).
    """
    examples = (example,) if isinstance(example, str) else tuple(example)

    def wrap(fn: Callable[..., Any]) -> Any:
        if examples:
            kwargs.setdefault("epilog", examples_epilog(*examples, formats=formats))

        @group.command(name, **kwargs)
        @functools.wraps(fn)
        def run(**params: Any) -> None:
            ctx = make_ctx()
            try:
                fn(ctx=ctx, **params)
            except FerryError as exc:
                fail(exc, ctx.output)
        return run
    return wrap


def fail(exc: FerryError, output: str | bool = "table") -> None:
    """Print one error once — as data for ``-o json|yaml``, else a message and its details on stderr."""
    if output in ("json", "yaml", True):
        Ctx(None, "yaml" if output == "yaml" else "json").emit(exc.to_dict())
    else:
        click.secho(f"error: {exc.message}", fg="red", err=True)
        details = exc.details
        if isinstance(details, list):
            for d in details:
                if isinstance(d, dict) and d.get("reason") and str(d["reason"]) in exc.message:
                    continue  # the message says it already: every error is printed once
                if isinstance(d, dict):
                    where = d.get("file", "")
                    if "document" in d:
                        where += f"[{d['document']}]"
                    who = f" {d['kind']}/{d['name']}" if d.get("kind") and d.get("name") else ""
                    field = d.get("field", "")
                    reason = d.get("reason") or humane.text({k: v for k, v in d.items()
                                                             if k not in ("file", "document", "kind", "name", "field")})
                    click.echo(f"  {where}{who} {field}: {reason}".rstrip(), err=True)
                else:
                    click.echo(f"  {humane.text(d)}", err=True)
        elif isinstance(details, dict) and details:
            for k, v in details.items():
                if k not in ("log_tail", "hint"):
                    click.echo(f"  {k}: {humane.text(v)}", err=True)
            if details.get("hint"):
                click.echo(f"  {details['hint']}", err=True)
            if details.get("log_tail"):
                click.echo(str(details["log_tail"]), err=True)
    sys.exit(exc.exit_code)
