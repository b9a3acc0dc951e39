"""The local stack's layout: what to start (``StackConfig``), the state file everything started is
recorded in and what derives from it, the environment of a function process, and the Pub/Sub topics and
subscriptions of ``infra/`` in the emulator. Shared by the stack (``up``/``down``), its repair and the
local scheduler, which import it and not each other."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.errors import InfraError
from ferry.infra import model
from ferry.infra.model import Infra
from ferry.infra.pubsub import pull_subscription_request, push_subscription_request, topic_path

DEFAULT_PROJECT = "ferry-local"
STATE_FILE = "state.json"


@dataclass
class StackConfig:
    """What to start. ``firestore``/``pubsub`` name running emulators to use instead of starting them
    (the test fixtures share one pair per session); those are neither started nor stopped here."""

    home: Path
    project: str = DEFAULT_PROJECT
    infra_dir: Path | None = None
    source: Path | None = None
    host: str = "127.0.0.1"
    base_port: int | None = None  # None: any free ports (tests); the CLI asks for ports.DEFAULT_BASE_PORT
    strict_ports: bool = False  # a taken port of the base layout is an error instead of moving with a note
    keep_data: bool = True  # import the documents the last ``down`` exported (see ferry.dev.data)
    scheduler: bool = True
    firestore: str | None = None
    pubsub: str | None = None
    deadline_s: float = 90.0
    extra_env: dict[str, str] = field(default_factory=dict)
    default_user: str | None = None  # the CLI's identity when neither --as nor FERRY_USER is given


# ---------------------------------------------------------------------------------------------- paths


def state_path(home: Path) -> Path:
    return Path(home) / STATE_FILE


def log_dir(home: Path) -> Path:
    return Path(home) / "logs" / "stack"


def read_state(home: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(state_path(home).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise InfraError(f"{state_path(home)} is not valid JSON: {exc} (remove it if no stack is running)") from exc
    return data if isinstance(data, dict) else None


def _write_state(home: Path, state: dict[str, Any]) -> None:
    path = state_path(home)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)  # it holds the stack's secret
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


LOCAL_USER = "developer@ferry.local"


def default_identity(cwd: Path | None = None) -> str:
    """Who a person at this workstation is by default: their git e-mail, else a fixed local name."""
    try:
        out = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True, timeout=5, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return LOCAL_USER
    return out.stdout.strip() or LOCAL_USER


def load_infra(state: dict[str, Any]) -> Infra:
    return model.load(state.get("infra_dir"))


def function_urls(state: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["url"] for c in state.get("components", []) if c["kind"] == "function"}


def function_env(config: StackConfig, home: Path, firestore: str, pubsub: str, api_url: str | None,
                 fn: model.Function, secret: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FERRY_API",)}
    env.update({
        "GOOGLE_CLOUD_PROJECT": config.project,
        "FIRESTORE_EMULATOR_HOST": firestore,
        "PUBSUB_EMULATOR_HOST": pubsub,
        "FERRY_HOME": str(home),
        "FERRY_SINK": f"file://{home}/sink",
        "FERRY_LAUNCHER": "local",
        "FERRY_LOG_DIR": str(home / "logs"),
        "FERRY_ALLOW_CLOCK_OVERRIDE": "1",
        "FERRY_IDENTITY": "header",  # X-Ferry-User: the local stack only (a deployed function refuses it)
        # whom a browser acts as in the local web view when it names nobody (the CLI's default too)
        "FERRY_DEFAULT_USER": config.default_user or default_identity(),
        # Operational routes (tick, evaluate, close, scale, deliver, pushes) take this stack's secret.
        "FERRY_STACK_SECRET": secret,
        "FERRY_TIMEOUT_S": str(fn.timeout_seconds),
        "FERRY_FUNCTION": fn.name,
        "PYTHONUNBUFFERED": "1",
        # One local instance serves what max_instances x concurrency serve in the cloud; keep a few
        # threads so a slow request does not block the readiness probe or other callers.
        "WORKERS": "1",
        "THREADS": str(max(4, fn.concurrency)),
    })
    if api_url:
        env["FERRY_API"] = api_url
    env.update(config.extra_env)
    env.update(fn.env)
    env["FERRY_LAUNCHER"] = "local"  # whatever a function's env says: locally, jobs are subprocesses
    return env


def provision(infra: Infra, project: str, urls: dict[str, str], pubsub_host: str, secret: str) -> list[str]:
    """Create the topics and subscriptions of ``infra`` in the Pub/Sub emulator (idempotent: existing
    ones are left alone, an existing push subscription's endpoint is set to this stack's). ``secret``: the
    stack's (``state["stack_secret"]``), which every push endpoint carries. Returns notes about what the
    emulator would not take."""
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1

    before = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = pubsub_host  # the clients read it when they are built
    try:
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    finally:
        if before is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST")
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = before
    notes: list[str] = []

    def push_subscription(request: dict[str, Any]) -> None:
        """Created, or its endpoint updated (a new stack's secret) when it exists already."""
        try:
            subscriber.create_subscription(request=request)
        except gexc.AlreadyExists:
            subscriber.modify_push_config(request={"subscription": request["name"],
                                                   "push_config": request["push_config"]})
        except gexc.InvalidArgument:
            create_subscription(request)

    def create_subscription(request: dict[str, Any]) -> None:
        try:
            subscriber.create_subscription(request=request)
        except gexc.AlreadyExists:
            pass
        except gexc.InvalidArgument as exc:
            if "dead_letter_policy" not in request:
                raise
            notes.append(f"subscription {request['name'].rsplit('/', 1)[-1]}: the emulator refused its "
                         f"dead-letter policy ({exc.message}); created without it")
            create_subscription({k: v for k, v in request.items() if k != "dead_letter_policy"})

    try:
        for t in infra.topics:
            try:
                publisher.create_topic(name=topic_path(project, t.name))
            except gexc.AlreadyExists:
                pass
        for s in infra.pull_subscriptions():
            create_subscription(pull_subscription_request(s, project))
        for fn, trig in infra.push_subscriptions():
            # The stack's secret rides in the endpoint: the function admits only this push (and the scheduler).
            push_subscription(push_subscription_request(trig, project, urls[fn.name], secret=secret))
    except gexc.GoogleAPICallError as exc:
        raise InfraError(f"creating the topics and subscriptions of infra/ failed: {exc}") from exc
    finally:
        publisher.transport.close()
        subscriber.close()
    return notes
