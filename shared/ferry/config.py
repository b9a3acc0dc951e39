"""Settings from the environment, read once per process; nothing connects at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal, cast

StoreKind = Literal["firestore", "memory"]
BrokerKind = Literal["pubsub", "memory"]
LauncherKind = Literal["local", "cloudrun"]
BacklogKind = Literal["pull", "monitoring"]
IdentityKind = Literal["", "header", "oidc"]  # "": not chosen (local only; see ferry.api.identity)
SecretsKind = Literal["local", "secretmanager"]


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default) or default


def _int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


@dataclass(frozen=True)
class Settings:
    project: str = field(default_factory=lambda: _env("GOOGLE_CLOUD_PROJECT", "ferry-local"))
    region: str = field(default_factory=lambda: _env("FERRY_REGION", "europe-west1"))
    # "firestore" (the default; the emulator when FIRESTORE_EMULATOR_HOST is set) or "memory"
    store: StoreKind = field(default_factory=lambda: cast(StoreKind, _env("FERRY_STORE", "firestore")))
    # "pubsub" (the emulator when PUBSUB_EMULATOR_HOST is set) or "memory"
    broker: BrokerKind = field(default_factory=lambda: cast(BrokerKind, _env("FERRY_BROKER", "pubsub")))
    sink: str = field(default_factory=lambda: _env("FERRY_SINK", "file://.ferry/sink"))
    # Gabo's BigQuery dataset of event type tables (docs/gabo.md, "BigQuery tables"); "" = none (local)
    bigquery_dataset: str = field(default_factory=lambda: os.environ.get("FERRY_BIGQUERY_DATASET", ""))
    # Styx's job launcher: "local" (a subprocess; the local stack) or "cloudrun" (Cloud Run jobs; cloud_env)
    launcher: LauncherKind = field(default_factory=lambda: cast(LauncherKind, _env("FERRY_LAUNCHER", "local")))
    # Gabo's backlog source: "pull" (the workers' own statistics; local — the emulator has no metrics)
    # or "monitoring" (Cloud Monitoring's Pub/Sub subscription metrics; cloud_env in infra/core.yaml)
    backlog: BacklogKind = field(default_factory=lambda: cast(BacklogKind, _env("FERRY_BACKLOG", "pull")))
    log_dir: str = field(default_factory=lambda: _env("FERRY_LOG_DIR", ".ferry/logs"))
    max_body_bytes: int = field(default_factory=lambda: _int("FERRY_MAX_BODY_BYTES", 10 * 1024 * 1024))
    admin_team: str = field(default_factory=lambda: _env("FERRY_ADMIN_TEAM", "admins"))
    # Every object's owner must be a declared Team (`ferry dev up` sets it; deployed functions have it
    # through FERRY_ADMINS, which closes teams). Off: undeclared owners are open (test fixtures only).
    require_teams: bool = field(default_factory=lambda: _env("FERRY_REQUIRE_TEAMS", "") in ("1", "true", "yes"))
    # "oidc": the verified ID token's e-mail (every deployed function); "header": X-Ferry-User (local
    # stack only). Unset ("") means "header" locally and refuses to start when deployed (ferry.api.identity).
    identity: IdentityKind = field(default_factory=lambda: cast(IdentityKind, os.environ.get("FERRY_IDENTITY", "")))
    # Channel secrets: "local" (env vars and files; the local stack) or "secretmanager" (cloud_env)
    secrets: SecretsKind = field(default_factory=lambda: cast(SecretsKind, _env("FERRY_SECRETS", "local")))
    # Where PagerDuty channels post (the local stack points it at its channel receiver), and how many
    # calls a failing channel gets before its notification is dead-lettered.
    pagerduty_url: str = field(default_factory=lambda: _env("FERRY_PAGERDUTY_URL",
                                                            "https://events.pagerduty.com/v2/enqueue"))
    notify_max_attempts: int = field(default_factory=lambda: _int("FERRY_NOTIFY_MAX_ATTEMPTS", 4))

    # Styx's tick (docs/styx.md): instances active at once, submissions per UTC minute, how often a
    # gated instance re-checks its upstream, and the threads one tick runs its commits on.
    styx_max_active: int = field(default_factory=lambda: _int("FERRY_STYX_MAX_ACTIVE", 1000))
    styx_submit_rate: int = field(default_factory=lambda: _int("FERRY_STYX_SUBMIT_RATE", 600))
    styx_gate_recheck_s: int = field(default_factory=lambda: _int("FERRY_STYX_GATE_RECHECK_S", 60))
    styx_threads: int = field(default_factory=lambda: _int("FERRY_STYX_THREADS", 8))
    # Cloud Run's limits in the region (docs/styx.md, "Cloud Run jobs: isolation and limits"): the jobs
    # Styx keeps (a pool evicting idle ones), running executions (FERRY_STYX_MAX_ACTIVE may not exceed it),
    # and how long a job's last execution must have ended before its job may be evicted.
    cloudrun_max_jobs: int = field(default_factory=lambda: _int("FERRY_CLOUDRUN_MAX_JOBS", 1000))
    cloudrun_max_running: int = field(default_factory=lambda: _int("FERRY_CLOUDRUN_MAX_RUNNING", 1000))
    cloudrun_idle_grace_s: int = field(default_factory=lambda: _int("FERRY_CLOUDRUN_IDLE_GRACE_S", 600))
    # CreateJob + DeleteJob a minute, all ticks together (the region's "Write requests per minute" quota)
    cloudrun_write_rate: int = field(default_factory=lambda: _int("FERRY_CLOUDRUN_WRITE_RATE", 120))
    # How long a submission may stay unrecorded before a later tick asks the launcher whether it
    # started (adopt it) or never did (launch it again under its id); the submitting tick stops
    # launching at half of it. Slow is not dead: this only decides when to ask, never what happened.
    # Smear natural triggers over this many seconds after their fire time (0, the default: none): each
    # workflow keeps its own fixed delay, so a peak that the submission quota spreads over minutes
    # anyway starts in a known order instead of all at :00 (docs/styx.md, "The :00 peak").
    styx_smear_s: int = field(default_factory=lambda: _int("FERRY_STYX_SMEAR_S", 0))
    styx_submission_lost_s: int = field(default_factory=lambda: _int("FERRY_STYX_SUBMISSION_LOST_S", 120))

    # Grants Gabo's provisioning makes on each event type's own topics and subscriptions (IAM members,
    # comma-separated; set by ferry deploy from infra/'s event_type_access; empty locally: the emulator
    # has no IAM) and the Pub/Sub service agent, which dead-letters a type's undeliverable events.
    gabo_publishers: str = field(default_factory=lambda: os.environ.get("FERRY_GABO_PUBLISHERS", ""))
    gabo_subscribers: str = field(default_factory=lambda: os.environ.get("FERRY_GABO_SUBSCRIBERS", ""))
    pubsub_agent: str = field(default_factory=lambda: os.environ.get("FERRY_PUBSUB_AGENT", ""))

    # Local stack only: honour X-Ferry-Now on API calls (never set in the cloud).
    allow_clock_override: bool = field(default_factory=lambda: _env("FERRY_ALLOW_CLOCK_OVERRIDE", "0") == "1")

    @property
    def local(self) -> bool:
        return bool(os.environ.get("FIRESTORE_EMULATOR_HOST") or os.environ.get("PUBSUB_EMULATOR_HOST"))
