"""Settings from the environment, read once per process; nothing connects at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default) or default


@dataclass(frozen=True)
class Settings:
    project: str = field(default_factory=lambda: _env("GOOGLE_CLOUD_PROJECT", "ferry-local"))
    region: str = field(default_factory=lambda: _env("FERRY_REGION", "europe-west1"))
    # "firestore" (the default; the emulator when FIRESTORE_EMULATOR_HOST is set) or "memory"
    store: str = field(default_factory=lambda: _env("FERRY_STORE", "firestore"))
    # "pubsub" (the emulator when PUBSUB_EMULATOR_HOST is set) or "memory"
    broker: str = field(default_factory=lambda: _env("FERRY_BROKER", "pubsub"))
    sink: str = field(default_factory=lambda: _env("FERRY_SINK", "file://.ferry/sink"))
    launcher: str = field(default_factory=lambda: _env("FERRY_LAUNCHER", "local"))
    # Gabo's backlog source: "pull" (the workers' own statistics; local — the emulator has no metrics)
    # or "monitoring" (Cloud Monitoring's Pub/Sub subscription metrics; cloud_env in infra/core.yaml)
    backlog: str = field(default_factory=lambda: _env("FERRY_BACKLOG", "pull"))
    log_dir: str = field(default_factory=lambda: _env("FERRY_LOG_DIR", ".ferry/logs"))
    max_body_bytes: int = field(default_factory=lambda: int(_env("FERRY_MAX_BODY_BYTES", str(10 * 1024 * 1024))))
    admin_team: str = field(default_factory=lambda: _env("FERRY_ADMIN_TEAM", "admins"))
    # "header": trust X-Ferry-User (local stack); "iap"/"oidc": the verified ID token's email (cloud)
    identity: str = field(default_factory=lambda: _env("FERRY_IDENTITY", "header"))

    # Local stack only: honour X-Ferry-Now on API calls (never set in the cloud).
    allow_clock_override: bool = field(default_factory=lambda: _env("FERRY_ALLOW_CLOCK_OVERRIDE", "0") == "1")

    @property
    def local(self) -> bool:
        return bool(os.environ.get("FIRESTORE_EMULATOR_HOST") or os.environ.get("PUBSUB_EMULATOR_HOST"))
