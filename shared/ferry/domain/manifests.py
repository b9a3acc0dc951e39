"""The metadata language (docs/metadata-language.md): pydantic models of every manifest kind.

Declarations only; stored state (landed partitions, instances, alerts...) lives in ``*Record`` models
of each subsystem. Every model forbids unknown fields so that a typo is an error, not a silent default.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from ferry.domain import periods
from ferry.domain.names import NAME_PATTERN  # one grammar for every name (docs/metadata-language.md)

API_VERSION: Literal["ferry/v1"] = "ferry/v1"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # POSIX: what a process environment can carry


def _duration(value: str) -> str:
    periods.parse_duration(value)
    return value


def _timezone(value: str) -> str:
    periods.zone(value)
    return value


def _partitioning(value: str) -> str:
    periods.partitioning(value)
    return value


def _schedule(value: str) -> str:
    periods.schedule(value)
    return value


def _env_names(value: dict[str, str]) -> dict[str, str]:
    bad = [k for k in value if not ENV_NAME.fullmatch(k)]
    if bad:
        raise ValueError(f"not an environment variable name: {', '.join(repr(k) for k in bad)} "
                         "(letters, digits and '_', not starting with a digit)")
    return value


Duration = Annotated[str, AfterValidator(_duration), Field(description="ISO 8601 duration, e.g. PT5M, PT2H, P1D")]
TimeZone = Annotated[str, AfterValidator(_timezone), Field(description="IANA time zone, e.g. Europe/Stockholm")]
Partitioning = Annotated[
    str, AfterValidator(_partitioning),
    Field(description="hourly|daily|weekly|monthly|yearly or an ISO duration such as PT5M"),
]
Schedule = Annotated[
    str, AfterValidator(_schedule), Field(description="hourly|daily|weekly|monthly|yearly or a 5-field cron"),
]
Name = Annotated[str, Field(pattern=NAME_PATTERN, description="lowercase letters, digits, '.', '_' and '-'")]
# A reference is a Name too: `upstream`, `depends_on`, `produces`, an owner, `producers`.
Ref = Name
Env = Annotated[dict[str, str], AfterValidator(_env_names),
                Field(description="environment variables: names of letters, digits and '_', not starting with a digit")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(_Strict):
    name: Name
    owner: Ref | None = Field(default=None, description="the owning team")
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class OwnedMetadata(Metadata):
    owner: Ref = Field(description="the owning team (required)")  # type: ignore[assignment]


class Sla(_Strict):
    warn_after: Duration | None = None
    error_after: Duration = "PT4H"
    severity: Literal["page", "ticket", "info"] = "page"
    calendar: Literal["all", "weekdays"] = "all"
    renotify_after: Duration = "PT4H"
    alert_on_history: bool = Field(default=False, description="notify for partitions whose deadline passed "
                                   "before the endpoint was registered (default: shown as late, not notified)")

    @model_validator(mode="after")
    def _warn_before_error(self) -> Sla:
        if self.warn_after and periods.parse_duration(self.warn_after) > periods.parse_duration(self.error_after):
            raise ValueError("warn_after must not be later than error_after")
        return self


class Volume(_Strict):
    """The volume check: a landing with fewer records than ``min_ratio`` x the median of the last
    ``window`` partitions of the same slot (``season`` apart: P7D compares a day with the same weekday)."""

    min_ratio: float = Field(gt=0, le=1)
    window: int = Field(default=4, ge=1, le=52)
    season: Duration = "P7D"


class EndpointSpec(_Strict):
    partitioning: Partitioning = "daily"
    timezone: TimeZone = "UTC"
    start: datetime | None = Field(default=None, description="first expected partition (aware timestamp)")
    sla: Sla = Field(default_factory=Sla)
    upstream: list[Ref] = Field(default_factory=list)
    volume: Volume | None = Field(default=None, description="low_volume check of landed records (off by default)")
    # Teams (besides the owner) whose workflows may record landings of this endpoint (`produces`).
    producers: list[Ref] = Field(default_factory=list)

    @field_validator("start")
    @classmethod
    def _aware_start(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("start needs a time zone, e.g. 2026-11-01T00:00:00Z")
        return v.astimezone(UTC) if v is not None else None

    def cadence(self) -> periods.Cadence:
        return periods.partitioning(self.partitioning, self.timezone)


class Retry(_Strict):
    max_tries: int = Field(default=10, ge=1, le=1000)
    initial_backoff: Duration = "PT3M"
    max_backoff: Duration = "PT45M"


class WorkflowAlerts(_Strict):
    """Who hears of a failing workflow: an instance ending ERROR (out of tries, exit 50, timeout, run
    error) opens one incident per workflow for its owning team (docs/styx.md, "When a run fails")."""

    severity: Literal["page", "ticket", "info", "off"] = Field(
        default="ticket", description="the incident's severity as an SLA's (page: critical, ticket: error, "
                                      "info: info); off: no incident")
    renotify_after: Duration = Field(default="PT4H", description="re-notify an open, unacknowledged incident "
                                                                 "this often")


class WorkflowSpec(_Strict):
    schedule: Schedule
    timezone: TimeZone = "UTC"
    offset: Duration = "PT0S"
    image: str = Field(min_length=1, description="container image the Cloud Run job runs")
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: Env = Field(default_factory=dict)
    timeout: Duration = "PT1H"
    retry: Retry = Field(default_factory=Retry)
    resources: list[Name] = Field(default_factory=list)
    depends_on: list[Ref] = Field(default_factory=list)
    produces: Ref | None = None
    cpu: str = "1"
    memory: str = "512Mi"
    service_account: str | None = None
    enabled: bool = True
    alerts: WorkflowAlerts = Field(default_factory=WorkflowAlerts)

    def cadence(self) -> periods.Cadence:
        return periods.schedule(self.schedule, self.timezone)


class EventTypeSpec(_Strict):
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    partitioning: Partitioning = "hourly"
    close_after: Duration = "PT10M"
    max_event_bytes: int = Field(default=65536, ge=64, le=10_000_000)
    sla: Sla = Field(default_factory=Sla)
    min_workers: int = Field(default=1, ge=0, le=100)
    max_workers: int = Field(default=4, ge=1, le=100)
    max_delivery_attempts: int = Field(default=5, ge=5, le=100)
    darkload: float = Field(default=0.0, ge=0.0, le=1.0, description="fraction mirrored to the shadow topic")
    shards: int | None = Field(default=None, ge=1, le=1024,
                               description="staging shards per period, a power of two (default: from the volume)")
    format: Literal["parquet", "ndjson"] = Field(
        default="parquet", description="how closed periods are stored: typed Parquet columns from the schema "
                                       "(queryable, read column by column) or the delivered gzip JSON lines")
    darkload_shards: int | None = Field(default=None, ge=1, le=1024,
                                        description="the darkload shadow's staging shards per period, a power of "
                                                    "two (default: as spec.shards)")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        from ferry.domain import schemas

        schemas.check(v)  # ValueError: pydantic reports it at spec.schema
        return v

    @model_validator(mode="after")
    def _worker_bounds(self) -> EventTypeSpec:
        if self.min_workers > self.max_workers:
            raise ValueError("min_workers must not exceed max_workers")
        for field_name in ("shards", "darkload_shards"):
            n = getattr(self, field_name)
            if n is not None and n & (n - 1):
                raise ValueError(f"{field_name} must be a power of two (a shard is a prefix of the id's hash bits)")
        return self


class ResourceSpec(_Strict):
    concurrency: int = Field(ge=0, le=100_000)
    # Teams besides the owner whose workflows may use this resource (its slots): nobody else's may.
    # (None when not given: a stored Resource's document, and its fingerprint, stay as they were)
    grants: list[Name] | None = Field(default=None, description="teams (besides the owner) whose workflows "
                                                                 "may use this resource")


def resource_grant_problem(resource: str, owner: str, grants: Sequence[str], workflow_owner: str) -> str | None:
    """Why a workflow of ``workflow_owner`` may not use the resource (None: it may) — a Resource belongs to
    its owner; another team uses it only by an explicit grant in the Resource manifest."""
    if workflow_owner == owner or workflow_owner in grants:
        return None
    return (f"resource {resource!r} belongs to {owner}, which grants it to "
            f"{', '.join(grants) if grants else 'no other team'}: add {workflow_owner} to its spec.grants "
            f"(by {owner}) to use it")


# Where a secret lives: a Secret Manager version (cloud; locally FERRY_SECRET_<NAME> or
# $FERRY_HOME/secrets/<NAME>), or, in the local stack only, an environment variable or a file.
SECRET_REF_PATTERN = r"^(projects/[^/\s]+/secrets/[^/\s]+/versions/[^/\s]+|env:[A-Za-z_][A-Za-z0-9_]*|file:\S+)$"
SEVERITIES = ("info", "warning", "error", "critical")
# An endpoint SLA's ``severity`` as the severity of the notifications its alerts raise.
SLA_SEVERITY: dict[str, Literal["info", "warning", "error", "critical"]] = {
    "page": "critical", "ticket": "error", "info": "info"}


def _secret_ref(value: str) -> str:
    if not re.fullmatch(SECRET_REF_PATTERN, value):
        raise ValueError("must be a secret reference — projects/P/secrets/S/versions/V, env:NAME or file:PATH — "
                         "never the routing key or webhook URL itself")
    return value


# A channel secret belongs to a team by its name: ``<team>--<name>`` (the Secret Manager secret's id,
# a local file's name) or ``FERRY_SECRET_<TEAM>__<NAME>`` (an environment variable, local stack only).
# Checked at apply and again by notify before it reads one (docs/security.md, "Channel secrets").
TEAM_SECRET_SEPARATOR = "--"


def secret_env_name(secret: str) -> str:
    """The environment variable the local stack reads for secret ``secret`` (``FERRY_SECRET_<S>``)."""
    return "FERRY_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", secret).upper()


def channel_secret_problem(team: str, ref: str) -> str | None:
    """Why team ``team`` may not use secret reference ``ref`` for a channel (None: it may).

    The secret must be the team's own: a Secret Manager secret or a file named ``<team>--<name>``, an
    environment variable named ``FERRY_SECRET_<TEAM>__<NAME>``. So a channel can name neither another
    team's secret nor anything of the stack's own (``FERRY_STACK_SECRET``, ``state.json``, a project
    secret of another purpose)."""
    prefix = team + TEAM_SECRET_SEPARATOR
    if TEAM_SECRET_SEPARATOR in team:
        return (f"team {team!r}: a team whose name holds {TEAM_SECRET_SEPARATOR!r} cannot own channel secrets "
                f"({TEAM_SECRET_SEPARATOR!r} ends the team's part of a secret's name)")
    m = re.fullmatch(r"projects/[^/]+/secrets/([^/]+)/versions/[^/]+", ref)
    if m:
        name, want = m.group(1), f"a secret named {prefix}<name>"
    elif ref.startswith("env:"):
        name, want = ref[4:], f"an environment variable named {secret_env_name(prefix)}<NAME>"
        prefix = secret_env_name(prefix)
    elif ref.startswith("file:"):
        name, want = ref[5:].replace("\\", "/").rsplit("/", 1)[-1], f"a file named {prefix}<name>"
    else:
        return f"{ref!r} is not a secret reference"
    if not name.startswith(prefix) or len(name) == len(prefix):
        return f"{ref!r} is not a secret of team {team}: a channel of {team} reads {want}"
    return None


SecretRef = Annotated[str, AfterValidator(_secret_ref),
                      Field(description="projects/*/secrets/*/versions/* (Secret Manager), env:NAME or file:PATH")]


class Channel(_Strict):
    """Where a team's notifications go. The routing key (PagerDuty) or URL (Slack, webhook) is a
    secret: the manifest holds only a reference to it."""

    name: Name
    type: Literal["pagerduty", "slack", "webhook"]
    secret: SecretRef
    min_severity: Literal["info", "warning", "error", "critical"] = "warning"


class TeamSpec(_Strict):
    members: list[str] = Field(default_factory=list)
    admins: list[str] = Field(default_factory=list)
    # What the team's workflows may run as and run: service account e-mails and image prefixes. The
    # admin team's lists are defaults every team may use (docs/security.md).
    service_accounts: list[str] = Field(default_factory=list)
    image_prefixes: list[str] = Field(default_factory=list)
    channels: list[Channel] = Field(default_factory=list, description="notification channels, by name")

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, v: list[Channel]) -> list[Channel]:
        names = [c.name for c in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"channel names must be unique: {', '.join(dupes)}")
        return v


class _Manifest(_Strict):
    apiVersion: Literal["ferry/v1"] = API_VERSION
    metadata: Metadata

    def fingerprint(self) -> str:
        """Stable hash of the manifest as declared: unchanged manifests are not rewritten."""
        body = json.dumps(self.to_doc(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()[:32]

    def to_doc(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @property
    def name(self) -> str:
        return self.metadata.name


class Endpoint(_Manifest):
    kind: Literal["Endpoint"] = "Endpoint"
    spec: EndpointSpec
    metadata: OwnedMetadata


class Workflow(_Manifest):
    kind: Literal["Workflow"] = "Workflow"
    spec: WorkflowSpec
    metadata: OwnedMetadata


EVENTS_PREFIX = "events."
# An endpoint labelled so is retired (a deleted event type's ``events.<type>``): readable, with its
# partitions, but no longer evaluated — no partition is expected of it.
RETIRED_LABEL = "ferry.retired"


def retired(labels: dict[str, str] | None) -> bool:
    return bool((labels or {}).get(RETIRED_LABEL))


def events_endpoint(event_type: str) -> str:
    """The endpoint Gabo registers for an event type's partitions: ``events.<type>``."""
    return EVENTS_PREFIX + event_type


def event_type_of(endpoint: str) -> str | None:
    """The event type whose partitions ``endpoint`` holds (the inverse of ``events_endpoint``), or None."""
    return endpoint[len(EVENTS_PREFIX):] if endpoint.startswith(EVENTS_PREFIX) else None


class EventType(_Manifest):
    kind: Literal["EventType"] = "EventType"
    spec: EventTypeSpec
    metadata: OwnedMetadata

    @property
    def endpoint_name(self) -> str:
        return events_endpoint(self.metadata.name)


class Resource(_Manifest):
    kind: Literal["Resource"] = "Resource"
    spec: ResourceSpec


class Team(_Manifest):
    kind: Literal["Team"] = "Team"
    spec: TeamSpec = Field(default_factory=TeamSpec)


Manifest = Endpoint | Workflow | EventType | Resource | Team

KINDS: dict[str, type[_Manifest]] = {
    "Endpoint": Endpoint,
    "Workflow": Workflow,
    "EventType": EventType,
    "Resource": Resource,
    "Team": Team,
}
# The collection / URL plural of each kind (GET /v1/{plural}).
PLURALS: dict[str, str] = {
    "Endpoint": "endpoints",
    "Workflow": "workflows",
    "EventType": "eventtypes",
    "Resource": "resources",
    "Team": "teams",
}
KIND_BY_PLURAL = {v: k for k, v in PLURALS.items()}


def kind_of(word: str) -> str:
    """Resolve a kind from what a user types: ``Endpoint``, ``endpoint``, ``endpoints``."""
    lowered = word.lower()
    for kind, plural in PLURALS.items():
        if lowered in (kind.lower(), plural):
            return kind
    import difflib

    words = [w for k, p in PLURALS.items() for w in (k.lower(), p)]
    close = difflib.get_close_matches(lowered, words, n=1, cutoff=0.7)
    hint = f" — did you mean {close[0]}?" if close else ""
    raise ValueError(f"unknown kind {word!r}{hint}; kinds: {', '.join(PLURALS.values())}")


def json_schema(kind: str) -> dict[str, Any]:
    model = KINDS[kind_of(kind)]
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"Ferry {model.__name__}"
    return schema


def as_duration(text: str) -> timedelta:
    return periods.parse_duration(text)
