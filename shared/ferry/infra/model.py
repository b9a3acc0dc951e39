"""The declarative description of a Ferry deployment, read from every ``infra/*.yaml``.

The same description drives ``ferry deploy`` (Google Cloud) and ``ferry dev up`` (the local stack):
functions and their triggers, topics, subscriptions, scheduler jobs, service accounts and the
Firestore composite indexes that the code's queries need. Two sections are cloud-only and the local
stack ignores them: ``cloud_env`` (environment every deployed function gets) and ``buckets``
(Cloud Storage buckets; locally the sink is a directory).

Values of ``cloud_env`` and of ``buckets`` may hold ``${project}`` and ``${region}``; the deploy plan
substitutes them (:func:`substitute`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ferry.domain.periods import parse_duration, validate_cron

DEFAULT_DIR = Path(__file__).resolve().parents[3] / "infra"

PLACEHOLDERS = ("project", "region")
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
# Set by the deploy plan itself on every function; cloud_env may not redefine them.
PLAN_ENV = ("GOOGLE_CLOUD_PROJECT", "FERRY_REGION")


def placeholders(value: str) -> list[str]:
    """The ``${name}`` placeholders a value uses."""
    return _PLACEHOLDER.findall(value)


def substitute(value: str, project: str, region: str) -> str:
    """``value`` with ``${project}`` and ``${region}`` replaced (the model refuses any other placeholder)."""
    names = {"project": project, "region": region}
    return _PLACEHOLDER.sub(lambda m: names[m.group(1)], value)


def _check_placeholders(where: str, value: str) -> list[str]:
    return [f"{where}: unknown placeholder ${{{n}}} (use ${{project}} or ${{region}})"
            for n in placeholders(value) if n not in PLACEHOLDERS]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceAccount(_Strict):
    """A service account and its project-wide roles (each must be on the deploy plan's allow-list,
    ``ferry.deploy.planning.PROJECT_ROLES``); ``custom:NAME`` names a role of ``custom_roles``.
    ``act_as`` are the accounts it may run things as (``iam.serviceAccountUser`` on those only)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    description: str = ""
    roles: list[str] = Field(default_factory=list)
    act_as: list[str] = Field(default_factory=list)
    # On each event type's own Pub/Sub resources, which appear when the type is applied (after the
    # deploy): ``publish`` on its topics, ``subscribe`` on its subscriptions. Granted by Gabo's
    # provisioning, never on the project (docs/security.md).
    event_type_access: list[Literal["publish", "subscribe"]] = Field(default_factory=list)

    def email(self, project: str) -> str:
        return f"{self.name}@{project}.iam.gserviceaccount.com"


class PubSubTrigger(_Strict):
    """A Pub/Sub-triggered function: an explicit push subscription to the function's URL.

    Explicit rather than Eventarc's implicit one, whose 10 s ack deadline would redeliver long work.
    """

    topic: str
    subscription: str
    ack_deadline_seconds: int = Field(default=60, ge=10, le=600)
    max_delivery_attempts: int = Field(default=5, ge=5, le=100)
    dead_letter_topic: str = "ferry-dead-letter"
    min_backoff_seconds: int = Field(default=10, ge=0, le=600)
    max_backoff_seconds: int = Field(default=600, ge=0, le=600)
    # The identity whose OIDC token the push carries (it gets run.invoker on this function only).
    service_account: str = "ferry-pubsub-push"


class Function(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    entry_point: str
    trigger: Literal["http", "pubsub"] = "http"
    pubsub: PubSubTrigger | None = None
    memory: str = "512Mi"
    cpu: str = "1"
    timeout_seconds: int = Field(default=60, ge=1, le=3600)
    min_instances: int = Field(default=0, ge=0)
    max_instances: int = Field(default=10, ge=1)
    concurrency: int = Field(default=1, ge=1, le=1000)
    service_account: str
    env: dict[str, str] = Field(default_factory=dict)
    # "internal-only" where no person calls (Cloud Scheduler and Pub/Sub push count as internal);
    # people-facing functions are "all" and name who may invoke them (`invokers`, IAM members).
    ingress: Literal["all", "internal-only", "internal-and-gclb"] = "internal-only"
    invokers: list[str] = Field(default_factory=list)
    description: str = ""

    @model_validator(mode="after")
    def _trigger(self) -> Function:
        if (self.trigger == "pubsub") != (self.pubsub is not None):
            raise ValueError("a pubsub trigger needs a 'pubsub' block, and only a pubsub trigger may have one")
        if self.pubsub and self.pubsub.ack_deadline_seconds < min(self.timeout_seconds, 600):
            raise ValueError(f"function {self.name}: the trigger's ack deadline ({self.pubsub.ack_deadline_seconds}s)"
                             f" must cover its timeout ({self.timeout_seconds}s), or work is redelivered mid-run")
        return self


class Topic(_Strict):
    """A topic; ``publishers``/``subscribers`` get ``pubsub.publisher``/``pubsub.subscriber`` on it only
    (service account names of this infra, or IAM members such as ``serviceAccount:x@p.iam...``)."""

    name: str = Field(pattern=r"^[a-zA-Z][a-zA-Z0-9._~+%-]{2,254}$")
    retention: str = "P7D"
    publishers: list[str] = Field(default_factory=list)
    subscribers: list[str] = Field(default_factory=list)
    description: str = ""


class CustomRole(_Strict):
    """A project custom role holding only the permissions one identity needs (``custom:NAME``)."""

    name: str = Field(pattern=r"^[a-zA-Z][a-zA-Z0-9_.]{2,63}$")
    title: str
    permissions: list[str] = Field(min_length=1)
    description: str = ""


class Subscription(_Strict):
    """A pull subscription (push ones come from functions' pubsub triggers)."""

    name: str
    topic: str
    ack_deadline_seconds: int = Field(default=60, ge=10, le=600)
    retention: str = "P7D"
    dead_letter_topic: str | None = None
    max_delivery_attempts: int = Field(default=5, ge=5, le=100)


class SchedulerJob(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,500}$")
    schedule: str
    time_zone: str = "UTC"
    function: str
    path: str = "/"
    body: dict[str, Any] = Field(default_factory=dict)
    service_account: str = "ferry-scheduler"
    attempt_deadline_seconds: int = Field(default=180, ge=15, le=1800)
    description: str = ""

    @model_validator(mode="after")
    def _cron(self) -> SchedulerJob:
        validate_cron(self.schedule)
        return self


class IndexField(_Strict):
    field: str
    order: Literal["ASCENDING", "DESCENDING"] | None = "ASCENDING"
    array_config: Literal["CONTAINS"] | None = None


class Index(_Strict):
    """A Firestore composite index; every query that needs one must be declared (tests check)."""

    collection: str
    fields: list[IndexField] = Field(min_length=2)
    query_scope: Literal["COLLECTION", "COLLECTION_GROUP"] = "COLLECTION"

    def key(self) -> tuple[str, tuple[tuple[str, str | None], ...]]:
        return self.collection, tuple((f.field, f.order or f.array_config) for f in self.fields)


class BucketMember(_Strict):
    """A bucket-scoped IAM grant (instead of a project-wide storage role)."""

    service_account: str
    role: str = Field(pattern=r"^roles/storage\.[A-Za-z.]+$")


class LifecycleRule(_Strict):
    """One Object Lifecycle Management rule: ``action`` objects older than ``age_days``.

    ``prefixes`` restrict it to object names starting with one of them (e.g. ``staging/``).
    """

    action: Literal["Delete", "SetStorageClass"] = "Delete"
    age_days: int = Field(ge=0)
    prefixes: list[str] = Field(default_factory=list)
    storage_class: Literal["NEARLINE", "COLDLINE", "ARCHIVE"] | None = None

    @model_validator(mode="after")
    def _class(self) -> LifecycleRule:
        if (self.action == "SetStorageClass") != (self.storage_class is not None):
            raise ValueError("a SetStorageClass rule needs a storage_class, and only such a rule may have one")
        return self

    def to_gcs(self) -> dict[str, Any]:
        """The rule as the Cloud Storage JSON API spells it."""
        action: dict[str, Any] = {"type": self.action}
        if self.storage_class:
            action["storageClass"] = self.storage_class
        condition: dict[str, Any] = {"age": self.age_days}
        if self.prefixes:
            condition["matchesPrefix"] = list(self.prefixes)
        return {"action": action, "condition": condition}


class Bucket(_Strict):
    """A Cloud Storage bucket (cloud only). ``name`` and ``location`` may use ``${project}``/``${region}``.

    Uniform bucket-level access is on by default (IAM only, no object ACLs) and public access is
    prevented. A ``retention`` (ISO duration) forbids deleting or replacing any object younger than it,
    so it does not suit a bucket whose objects are rewritten or removed (Gabo's staging objects).
    """

    name: str = Field(min_length=3)
    location: str = "${region}"
    storage_class: Literal["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"] = "STANDARD"
    uniform_access: bool = True
    public_access_prevention: Literal["enforced", "inherited"] = "enforced"
    lifecycle: list[LifecycleRule] = Field(default_factory=list)
    retention: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    members: list[BucketMember] = Field(default_factory=list)
    description: str = ""

    @model_validator(mode="after")
    def _retention(self) -> Bucket:
        if self.retention is not None:
            parse_duration(self.retention)
        return self


class Web(_Strict):
    """People in browsers (docs/deploy.md): an external HTTPS load balancer at ``domain`` whose backend
    services front ``functions`` through serverless NEGs, with Identity-Aware Proxy on each; ``members``
    (users or groups) may pass IAP. Paths under ``/v1/`` go to the ``api`` function, the rest to the
    first of the others (the dashboard). Empty ``domain``: no load balancer, no IAP."""

    domain: str = ""
    members: list[str] = Field(default_factory=list)
    functions: list[str] = Field(default_factory=lambda: ["api", "dashboard"])


class Infra(_Strict):
    service_accounts: list[ServiceAccount] = Field(default_factory=list)
    functions: list[Function] = Field(default_factory=list)
    topics: list[Topic] = Field(default_factory=list)
    subscriptions: list[Subscription] = Field(default_factory=list)
    scheduler_jobs: list[SchedulerJob] = Field(default_factory=list)
    indexes: list[Index] = Field(default_factory=list)
    # Environment of every deployed function (under its own ``env``); the local stack has its own defaults.
    cloud_env: dict[str, str] = Field(default_factory=dict)
    buckets: list[Bucket] = Field(default_factory=list)
    custom_roles: list[CustomRole] = Field(default_factory=list)
    # Ferry's first admins (e-mails): the deployment's switch to closed teams (FERRY_ADMINS).
    admins: list[str] = Field(default_factory=list)
    # Where Ferry's Firestore database (native mode) lives: a Firestore location (default: the region).
    firestore_location: str = "${region}"
    # People's OAuth client ids whose ID tokens the API accepts besides its URL (docs/security.md).
    audiences: list[str] = Field(default_factory=list)
    web: Web = Field(default_factory=Web)

    @model_validator(mode="after")
    def _references(self) -> Infra:
        problems = []
        accounts = {a.name for a in self.service_accounts}
        topics = {t.name for t in self.topics}
        functions = {f.name for f in self.functions}
        for kind, items in (("function", self.functions), ("topic", self.topics),
                            ("subscription", self.subscriptions), ("scheduler job", self.scheduler_jobs),
                            ("service account", self.service_accounts), ("bucket", self.buckets)):
            names = [i.name for i in items]
            problems += [f"{kind} {n!r} is declared twice" for n in set(names) if names.count(n) > 1]
        for f in self.functions:
            if f.service_account not in accounts:
                problems.append(f"function {f.name}: unknown service account {f.service_account!r}")
            if f.pubsub:
                problems += [f"function {f.name}: unknown topic {t!r}"
                             for t in (f.pubsub.topic, f.pubsub.dead_letter_topic) if t not in topics]
                if f.pubsub.service_account not in accounts:
                    problems.append(f"function {f.name}: unknown push service account {f.pubsub.service_account!r}")
        for s in self.subscriptions:
            problems += [f"subscription {s.name}: unknown topic {t!r}"
                         for t in (s.topic, s.dead_letter_topic) if t and t not in topics]
        for j in self.scheduler_jobs:
            if j.function not in functions:
                problems.append(f"scheduler job {j.name}: unknown function {j.function!r}")
            elif next(f for f in self.functions if f.name == j.function).trigger != "http":
                problems.append(f"scheduler job {j.name}: function {j.function!r} is not HTTP-triggered")
            if j.service_account not in accounts:
                problems.append(f"scheduler job {j.name}: unknown service account {j.service_account!r}")
        for t in self.topics:
            parse_duration(t.retention)
            problems += [f"topic {t.name}: unknown service account {m!r}" for m in (*t.publishers, *t.subscribers)
                         if ":" not in m and m not in accounts]
        customs = {r.name for r in self.custom_roles}
        for a in self.service_accounts:
            problems += [f"service account {a.name}: unknown custom role {r!r}" for r in a.roles
                         if r.startswith("custom:") and r[7:] not in customs]
            problems += [f"service account {a.name}: act_as unknown account {x!r}" for x in a.act_as
                         if "@" not in x and x not in accounts]
        for f in self.functions:
            if f.invokers and f.ingress == "internal-only":
                problems.append(f"function {f.name}: people invoke it (invokers) but its ingress is internal-only")
        if self.web.domain:
            problems += [f"web: unknown function {f!r}" for f in self.web.functions if f not in functions]
            if not self.web.members:
                problems.append("web: name who may pass Identity-Aware Proxy (members: user:… or group:…)")
        problems += [f"admins: {a!r} is not an e-mail address" for a in self.admins
                     if not re.fullmatch(r"[^@\s,]+@[^@\s,]+\.[^@\s,]+", a)]
        problems += self._cloud_problems(accounts)
        if problems:
            raise ValueError("; ".join(sorted(problems)))
        return self

    def _cloud_problems(self, accounts: set[str]) -> list[str]:
        problems = []
        for key, value in self.cloud_env.items():
            if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
                problems.append(f"cloud_env: {key!r} is not an environment variable name")
            if key in PLAN_ENV:
                problems.append(f"cloud_env: {key} is set by ferry deploy itself")
            problems += _check_placeholders(f"cloud_env {key}", value)
        for b in self.buckets:
            problems += _check_placeholders(f"bucket {b.name}", b.name)
            problems += _check_placeholders(f"bucket {b.name} location", b.location)
            problems += [f"bucket {b.name}: unknown service account {m.service_account!r}"
                         for m in b.members if m.service_account not in accounts]
        sink = self.cloud_env.get("FERRY_SINK", "")
        if sink.startswith("gs://"):
            # Compared before substitution: both spell the bucket with the same placeholders.
            bucket = sink[5:].partition("/")[0]
            if bucket not in {b.name for b in self.buckets}:
                problems.append(f"cloud_env FERRY_SINK: bucket {bucket!r} is not declared under buckets")
        return problems

    def function(self, name: str) -> Function:
        for f in self.functions:
            if f.name == name:
                return f
        raise KeyError(name)

    def push_subscriptions(self) -> list[tuple[Function, PubSubTrigger]]:
        return [(f, f.pubsub) for f in self.functions if f.pubsub is not None]

    def dead_letter_topics(self) -> list[str]:
        """Every topic that a push trigger or a subscription dead-letters to."""
        named = [trig.dead_letter_topic for _, trig in self.push_subscriptions()]
        named += [s.dead_letter_topic for s in self.subscriptions if s.dead_letter_topic]
        return sorted(set(named))

    def dead_letter_holds(self) -> list[Subscription]:
        """A ``<topic>-hold`` pull subscription for every dead-letter topic that no declared subscription
        reads: a topic without a subscription drops what is published to it, so a dead letter nobody
        holds is lost. Kept ``HOLD_RETENTION`` (Pub/Sub's longest), read by ``ferry dead-letters`` and
        re-published by ``ferry replay --dead-letters``."""
        read = {s.topic for s in self.subscriptions}
        return [Subscription(name=hold_name(t), topic=t, retention=HOLD_RETENTION)
                for t in self.dead_letter_topics() if t not in read]

    def pull_subscriptions(self) -> list[Subscription]:
        """The declared pull subscriptions and the dead-letter holds: what ``ferry dev up``, the
        reconcile and ``ferry deploy`` create."""
        return [*self.subscriptions, *self.dead_letter_holds()]


HOLD_RETENTION = "P7D"


def hold_name(topic: str) -> str:
    """The subscription that keeps what reaches dead-letter topic ``topic`` (Gabo's per-type holds are
    named the same way: ``gabo.core.Names.hold``)."""
    return f"{topic}-hold"


# Sections that are mappings (merged key by key); sections set once, in one file; every other section
# is a list (concatenated).
MAPPING_SECTIONS = ("cloud_env",)
SINGLE_SECTIONS = ("web", "firestore_location")


def load(directory: str | Path | None = None) -> Infra:
    """Merge every ``*.yaml`` of the infra directory into one description.

    List sections concatenate; mapping sections (``cloud_env``) merge key by key, and a key that two
    files set to different values is an error naming both files.
    """
    directory = Path(directory) if directory else DEFAULT_DIR
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, str], Path] = {}
    for f in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(f.read_text()) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{f}: expected a mapping of sections")
        for key, items in doc.items():
            if key in MAPPING_SECTIONS:
                if items is None:
                    continue
                if not isinstance(items, dict):
                    raise ValueError(f"{f}: section {key!r} must be a mapping")
                section = merged.setdefault(key, {})
                for k, v in items.items():
                    if k in section and section[k] != v:
                        raise ValueError(f"{f}: {key}.{k} = {v!r} conflicts with {section[k]!r} "
                                         f"from {origin[(key, k)]}")
                    section[k] = v
                    origin.setdefault((key, k), f)
                continue
            if key in SINGLE_SECTIONS:
                if key in merged and merged[key] != items:
                    raise ValueError(f"{f}: {key} is already set in {origin[(key, '')]}")
                merged[key] = items
                origin.setdefault((key, ""), f)
                continue
            if not isinstance(items, list):
                raise ValueError(f"{f}: section {key!r} must be a list")
            merged.setdefault(key, []).extend(items)
    return Infra.model_validate(merged)
