"""Carry out a deployment plan idempotently: read the current state, then create, update or leave it.

Client-library steps go through injected clients (Pub/Sub admin, Cloud Scheduler, Firestore admin,
Cloud Storage); gcloud steps through an injected runner. Every step reads before it writes, so running the same
plan twice reports ``unchanged`` everywhere the second time.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from google.api_core import exceptions as gexc

from ferry.deploy.planning import Step, plan
from ferry.errors import FerryError, InfraError
from ferry.infra.model import Infra

Action = Literal["created", "updated", "unchanged"]

TOPIC_FIELDS = ("message_retention_duration", "labels")
SUBSCRIPTION_FIELDS = ("ack_deadline_seconds", "message_retention_duration", "push_config", "dead_letter_policy",
                       "retry_policy", "expiration_policy", "labels")
JOB_FIELDS = ("description", "schedule", "time_zone", "attempt_deadline", "http_target", "retry_config")


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str = ""
    stderr: str = ""


class Runner(Protocol):
    def __call__(self, argv: Sequence[str]) -> RunResult: ...


def subprocess_runner(argv: Sequence[str]) -> RunResult:
    """Run a gcloud command for real."""
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=1800)
    except FileNotFoundError as exc:
        raise InfraError(f"{argv[0]} not found: install the Google Cloud SDK") from exc
    return RunResult(p.returncode, p.stdout, p.stderr)


@dataclass(frozen=True)
class Outcome:
    step: Step
    action: Action
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.step.kind, "name": self.step.name, "action": self.action, "detail": self.detail}


def _plain(msg: Any) -> dict[str, Any]:
    return dict(type(msg).to_dict(msg, always_print_fields_with_no_presence=False,
                                  preserving_proto_field_name=True))


def _changed(desired: dict[str, Any], existing: dict[str, Any], fields: Sequence[str]) -> list[str]:
    """The managed fields the plan sets that differ (fields it leaves unset keep the server's value)."""
    return [f for f in fields if f in desired and desired[f] != existing.get(f)]


@dataclass
class Applier:
    """Applies steps. Each client is built lazily when absent (nothing connects at construction)."""

    runner: Runner = subprocess_runner
    publisher: Any = None
    subscriber: Any = None
    scheduler: Any = None
    firestore_admin: Any = None
    storage: Any = None
    _probes: dict[tuple[str, ...], RunResult] = field(default_factory=dict)

    # -- clients -------------------------------------------------------------------------------
    def _publisher(self) -> Any:
        if self.publisher is None:
            import google.cloud.pubsub_v1 as pubsub_v1

            self.publisher = pubsub_v1.PublisherClient()
        return self.publisher

    def _subscriber(self) -> Any:
        if self.subscriber is None:
            import google.cloud.pubsub_v1 as pubsub_v1

            self.subscriber = pubsub_v1.SubscriberClient()
        return self.subscriber

    def _scheduler(self) -> Any:
        if self.scheduler is None:
            from google.cloud import scheduler_v1

            self.scheduler = scheduler_v1.CloudSchedulerClient()
        return self.scheduler

    def _firestore_admin(self) -> Any:
        if self.firestore_admin is None:
            from google.cloud import firestore_admin_v1

            self.firestore_admin = firestore_admin_v1.FirestoreAdminClient()
        return self.firestore_admin

    def _storage(self) -> Any:
        if self.storage is None:
            from google.cloud import storage

            self.storage = storage.Client()
        return self.storage

    # -- gcloud --------------------------------------------------------------------------------
    def run(self, argv: Sequence[str]) -> str:
        r = self.runner(argv)
        if r.returncode != 0:
            raise InfraError(f"`{' '.join(argv[:4])} …` failed: {r.stderr.strip()[-800:]}",
                             {"argv": list(argv)})
        return r.stdout

    def _probe(self, argv: Sequence[str], cached: bool = False) -> RunResult:
        key = tuple(argv)
        if cached and key in self._probes:
            return self._probes[key]
        r = self.runner(argv)
        if cached:
            self._probes[key] = r
        return r

    # -- steps ---------------------------------------------------------------------------------
    def apply(self, step: Step) -> Outcome:
        handler: Callable[[Step], Outcome] = getattr(self, f"_{step.kind}")
        try:
            return handler(step)
        except FerryError:
            raise
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"{step.kind} {step.name}: {exc.message}") from exc

    def _apis(self, step: Step) -> Outcome:
        enabled = set(self._probe(step.probe or []).stdout.split())
        if set(step.expect["apis"].split()) <= enabled:
            return Outcome(step, "unchanged")
        self.run(step.request)
        return Outcome(step, "updated", "enabled " + ", ".join(sorted(set(step.expect["apis"].split()) - enabled)))

    def _service_account(self, step: Step) -> Outcome:
        if self._probe(step.probe or []).returncode == 0:
            return Outcome(step, "unchanged")
        self.run(step.request)
        return Outcome(step, "created")

    def _custom_role(self, step: Step) -> Outcome:
        probe = self._probe(step.probe or [])
        if probe.returncode != 0:
            self.run(step.request)
            return Outcome(step, "created")
        try:
            have = ",".join(sorted(json.loads(probe.stdout or "{}").get("includedPermissions", [])))
        except ValueError:
            have = ""
        if have == step.expect["permissions"]:
            return Outcome(step, "unchanged")
        update = ["gcloud", "iam", "roles", "update", *step.request[4:]]
        self.run([a for a in update if a != "--stage=GA"])
        return Outcome(step, "updated", "permissions changed")

    def _iam(self, step: Step) -> Outcome:
        probe = self._probe(step.probe or [], cached=True)
        if probe.returncode == 0:
            try:
                policy = json.loads(probe.stdout or "{}")
            except ValueError:
                policy = {}
            for b in policy.get("bindings", []):
                if b.get("role") == step.expect["role"] and step.expect["member"] in b.get("members", []) \
                        and not b.get("condition"):
                    return Outcome(step, "unchanged")
        self.run(step.request)
        return Outcome(step, "created")

    def _function(self, step: Step) -> Outcome:
        probe = self._probe(step.probe or [])
        if probe.returncode != 0:
            self.run(step.request)
            return Outcome(step, "created")
        labels = json.loads(probe.stdout or "{}").get("labels", {})
        if labels.get("ferry-fingerprint") == step.expect["fingerprint"]:
            return Outcome(step, "unchanged")
        self.run(step.request)
        return Outcome(step, "updated")

    def _database(self, step: Step) -> Outcome:
        """The project's Firestore database: created in native mode when absent (waited for: its indexes
        come next); one in Datastore mode stops the deploy — it cannot be converted."""
        from google.cloud.firestore_admin_v1.types.database import Database

        client = self._firestore_admin()
        name = f"{step.request['parent']}/databases/{step.request['database_id']}"
        try:
            existing = client.get_database(request={"name": name})
        except gexc.NotFound:
            op = client.create_database(request={"parent": step.request["parent"],
                                                 "database_id": step.request["database_id"],
                                                 "database": Database(step.request["database"])})
            op.result(timeout=600)
            return Outcome(step, "created")
        native = Database.DatabaseType.FIRESTORE_NATIVE
        if existing.type_ != native:
            raise InfraError(f"the Firestore database {name} is in {existing.type_.name}, not native mode; Ferry "
                             "needs native mode and a database's mode cannot change — deploy to a new project")
        return Outcome(step, "unchanged")

    def _web(self, step: Step) -> Outcome:
        probe = self._probe(step.probe or [])
        if probe.returncode == 0 and step.expect.get("contains", "") in probe.stdout:
            return Outcome(step, "unchanged")
        self.run(step.request)
        return Outcome(step, "created" if probe.returncode != 0 else "updated")

    def _index(self, step: Step) -> Outcome:
        from google.cloud import firestore_admin_v1

        client = self._firestore_admin()
        desired = firestore_admin_v1.Index(step.request["index"])
        want = _index_key(desired)
        for existing in client.list_indexes(request={"parent": step.request["parent"]}):
            if _index_key(existing) == want:
                return Outcome(step, "unchanged")
        # Index builds take minutes; the operation is not awaited (queries fail until it is READY).
        client.create_index(request={"parent": step.request["parent"], "index": desired})
        return Outcome(step, "created", "building")

    def _topic(self, step: Step) -> Outcome:
        import google.cloud.pubsub_v1 as pubsub_v1

        client = self._publisher()
        desired = pubsub_v1.types.Topic(step.request)
        try:
            existing = client.get_topic(request={"topic": desired.name})
        except gexc.NotFound:
            client.create_topic(request=desired)
            return Outcome(step, "created")
        paths = _changed(_plain(desired), _plain(existing), TOPIC_FIELDS)
        if not paths:
            return Outcome(step, "unchanged")
        client.update_topic(request={"topic": desired, "update_mask": {"paths": paths}})
        return Outcome(step, "updated", ", ".join(paths))

    def _subscription(self, step: Step) -> Outcome:
        import google.cloud.pubsub_v1 as pubsub_v1

        client = self._subscriber()
        desired = pubsub_v1.types.Subscription(step.request)
        try:
            existing = client.get_subscription(request={"subscription": desired.name})
        except gexc.NotFound:
            client.create_subscription(request=desired)
            return Outcome(step, "created")
        if existing.topic != desired.topic:
            raise InfraError(f"subscription {step.name} exists on {existing.topic}, not {desired.topic}; "
                             "a subscription's topic cannot change — delete it first")
        paths = _changed(_plain(desired), _plain(existing), SUBSCRIPTION_FIELDS)
        if not paths:
            return Outcome(step, "unchanged")
        client.update_subscription(request={"subscription": desired, "update_mask": {"paths": paths}})
        return Outcome(step, "updated", ", ".join(paths))

    _push_subscription = _subscription

    def _bucket(self, step: Step) -> Outcome:
        """get → create, or patch the settings that differ; a bucket's location cannot change."""
        client = self._storage()
        want = step.request["bucket"]
        try:
            bucket = client.get_bucket(want["name"])
        except gexc.NotFound:
            bucket = client.bucket(want["name"])
            _set_bucket(bucket, want, _bucket_diff(want, {}))
            bucket = client.create_bucket(bucket, project=step.request["project"], location=want["location"])
            # The create response is the stored bucket: whatever it did not take is patched at once.
            fields = _bucket_diff(want, bucket._properties)
            if fields:
                _set_bucket(bucket, want, fields)
                bucket.patch()
            return Outcome(step, "created")
        have = bucket._properties
        if str(have.get("location", "")).upper() != want["location"]:
            raise InfraError(f"bucket {want['name']} exists in {have.get('location')}, not {want['location']}; "
                             "a bucket's location cannot change — choose another name or region")
        fields = _bucket_diff(want, have)
        if not fields:
            return Outcome(step, "unchanged")
        _set_bucket(bucket, want, fields)
        bucket.patch()
        return Outcome(step, "updated", ", ".join(fields))

    def _bucket_iam(self, step: Step) -> Outcome:
        """Add one unconditional binding to the bucket's policy (read first; the etag guards the write)."""
        bucket = self._storage().bucket(step.request["bucket"])
        member, role = step.request["member"], step.request["role"]
        policy = bucket.get_iam_policy(requested_policy_version=3)
        for b in policy.bindings:
            if b.get("role") == role and not b.get("condition"):
                if member in b.get("members", ()):
                    return Outcome(step, "unchanged")
                b["members"] = {*b.get("members", ()), member}
                break
        else:
            policy.bindings.append({"role": role, "members": {member}})
        bucket.set_iam_policy(policy)
        return Outcome(step, "created")

    def _scheduler_job(self, step: Step) -> Outcome:
        from google.cloud import scheduler_v1

        client = self._scheduler()
        desired = scheduler_v1.Job(step.request["job"])
        try:
            existing = client.get_job(request={"name": desired.name})
        except gexc.NotFound:
            client.create_job(request={"parent": step.request["parent"], "job": desired})
            return Outcome(step, "created")
        have = _plain(existing)
        # Cloud Scheduler adds its own User-Agent header to stored jobs
        headers = have.get("http_target", {}).get("headers", {})
        headers.pop("User-Agent", None)
        paths = _changed(_plain(desired), have, JOB_FIELDS)
        if not paths:
            return Outcome(step, "unchanged")
        client.update_job(request={"job": desired, "update_mask": {"paths": paths}})
        return Outcome(step, "updated", ", ".join(paths))


BUCKET_FIELDS = ("storageClass", "uniformBucketLevelAccess", "publicAccessPrevention", "lifecycle", "labels",
                 "retentionPolicy")


def _bucket_diff(want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    """The managed settings of a bucket that differ (labels: only ours; retention: only when declared)."""
    iam = have.get("iamConfiguration") or {}
    got: dict[str, Any] = {
        "storageClass": have.get("storageClass"),
        "uniformBucketLevelAccess": bool((iam.get("uniformBucketLevelAccess") or {}).get("enabled")),
        # "unspecified" is what older buckets report for "inherited"
        "publicAccessPrevention": {"unspecified": "inherited", None: "inherited"}.get(
            iam.get("publicAccessPrevention"), iam.get("publicAccessPrevention")),
        "lifecycle": (have.get("lifecycle") or {}).get("rule", []),
        "labels": {k: v for k, v in (have.get("labels") or {}).items() if k in want["labels"]},
        "retentionPolicy": str((have.get("retentionPolicy") or {}).get("retentionPeriod")),
    }
    wanted: dict[str, Any] = {
        "storageClass": want["storageClass"],
        "uniformBucketLevelAccess": want["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"],
        "publicAccessPrevention": want["iamConfiguration"]["publicAccessPrevention"],
        "lifecycle": want["lifecycle"]["rule"],
        "labels": want["labels"],
    }
    if "retentionPolicy" in want:
        wanted["retentionPolicy"] = want["retentionPolicy"]["retentionPeriod"]
    return [f for f in BUCKET_FIELDS if f in wanted and wanted[f] != got[f]]


def _set_bucket(bucket: Any, want: Mapping[str, Any], fields: Sequence[str]) -> None:
    """Set ``fields`` of ``want`` on a google-cloud-storage Bucket (which then sends only those)."""
    if "storageClass" in fields:
        bucket.storage_class = want["storageClass"]
    if "uniformBucketLevelAccess" in fields:
        bucket.iam_configuration.uniform_bucket_level_access_enabled = \
            want["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"]
    if "publicAccessPrevention" in fields:
        bucket.iam_configuration.public_access_prevention = want["iamConfiguration"]["publicAccessPrevention"]
    if "lifecycle" in fields:
        bucket.lifecycle_rules = [dict(r) for r in want["lifecycle"]["rule"]]
    if "labels" in fields:
        bucket.labels = {**(bucket.labels or {}), **want["labels"]}
    if "retentionPolicy" in fields:
        bucket.retention_period = int(want["retentionPolicy"]["retentionPeriod"])


def _index_key(ix: Any) -> tuple[Any, ...]:
    d = _plain(ix)
    fields = tuple((f.get("field_path"), f.get("order"), f.get("array_config"))
                   for f in d.get("fields", []) if f.get("field_path") != "__name__")
    return d.get("query_scope"), fields


def function_urls(infra: Infra, project: str, region: str, runner: Runner) -> dict[str, str]:
    """The deployed functions' real URLs (``serviceConfig.uri``), read after they are deployed."""
    urls = {}
    for fn in infra.functions:
        r = runner(["gcloud", "functions", "describe", fn.name, "--gen2", f"--project={project}",
                    f"--region={region}", "--format=value(serviceConfig.uri)"])
        if r.returncode != 0 or not r.stdout.strip():
            raise InfraError(f"function {fn.name} has no URL after deploying: {r.stderr.strip()[-400:]}")
        urls[fn.name] = r.stdout.strip()
    return urls


def backend_ids(infra: Infra, project: str, runner: Runner) -> dict[str, str]:
    """The numeric ids of the backend services in front of the functions behind IAP (IAP's audience)."""
    from ferry.deploy.planning import backend_service

    ids = {}
    for fn in infra.web.functions:
        name = backend_service(fn)
        r = runner(["gcloud", "compute", "backend-services", "describe", name, "--global", f"--project={project}",
                    "--format=value(id)"])
        if r.returncode != 0 or not r.stdout.strip():
            raise InfraError(f"backend service {name} has no id: {r.stderr.strip()[-400:]}")
        ids[name] = r.stdout.strip()
    return ids


def project_number(project: str, runner: Runner) -> str:
    r = runner(["gcloud", "projects", "describe", project, "--format=value(projectNumber)"])
    if r.returncode != 0 or not r.stdout.strip():
        raise InfraError(f"cannot read the project number of {project}: {r.stderr.strip()[-400:]}")
    return r.stdout.strip()


def deploy(infra: Infra, project: str, region: str, source_dir: str | Path, applier: Applier,
           on_outcome: Callable[[Outcome], None] | None = None,
           urls: Mapping[str, str] | None = None, number: str | None = None) -> list[Outcome]:
    """Apply the whole plan in order; a failing step stops the deployment (rerunning resumes it).

    ``urls`` and ``number`` skip their look-ups when given (tests, or a deployment that knows them).
    """
    number = number or project_number(project, applier.runner)
    steps = plan(infra, project, region, source_dir, urls=urls, project_number=number)
    outcomes = []
    resolved = urls is not None
    ids: dict[str, str] | None = None
    for i in range(len(steps)):
        if steps[i].needs_backend_ids and ids is None:
            # The backend services exist now: re-plan with their ids, IAP's audience (same order).
            ids = backend_ids(infra, project, applier.runner)
            steps = plan(infra, project, region, source_dir, urls=urls, project_number=number, backend_ids=ids)
        if steps[i].needs_urls and not resolved:
            # The functions exist now: re-plan with their real URLs (same inputs, same order).
            steps = plan(infra, project, region, source_dir, project_number=number, backend_ids=ids,
                         urls=function_urls(infra, project, region, applier.runner))
            resolved = True
        outcome = applier.apply(steps[i])
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
    return outcomes
