"""The deployment plan: every step that turns ``infra/`` into a running Ferry on Google Cloud.

``plan()`` is pure: it reads the infra description and returns ordered :class:`Step` s, each carrying
the exact request it will make — a client-library request as a dict (Pub/Sub admin, Cloud Scheduler,
Firestore admin) or a ``gcloud`` argv (services, service accounts, IAM, functions). ``--dry-run``
prints exactly this; :mod:`ferry.deploy.apply` carries it out.

Order matters: APIs → service accounts → their project roles → buckets and their bucket-scoped
grants → the Firestore database (native mode) → its indexes → topics → pull subscriptions → (with
``web.domain``) the load balancer and IAP → functions → invoker bindings → push subscriptions →
scheduler jobs. A new, empty project needs nothing else first but billing and a person allowed to
deploy (docs/deploy.md). Anything that calls a function (push subscriptions, scheduler jobs)
comes after the function and its invoker binding exist, so the first delivery is already
authorized; a bucket exists before any function that writes to it.

Every function's environment is the infra's ``cloud_env`` (``${project}``/``${region}``
substituted), then ``GOOGLE_CLOUD_PROJECT``/``FERRY_REGION``, then the function's own ``env``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ferry.domain.periods import parse_duration
from ferry.errors import ValidationError
from ferry.infra.model import Bucket, Function, Infra, PubSubTrigger, substitute
from ferry.infra.pubsub import duration, pull_subscription_request, push_subscription_request

Via = Literal["gcloud", "pubsub", "scheduler", "firestore_admin", "storage"]
Kind = Literal["apis", "service_account", "custom_role", "iam", "bucket", "bucket_iam", "database", "index",
               "web", "topic", "subscription", "function", "push_subscription", "scheduler_job"]

RUNTIME = "python312"
DATABASE = "(default)"
APIS = (
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",  # project IAM policy reads and writes (gcloud projects …)
    "cloudscheduler.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",  # ID tokens for impersonated accounts (CI sign-in, docs/security.md)
    "logging.googleapis.com",
    "monitoring.googleapis.com",  # Gabo's scaler and closer read subscription backlog (FERRY_BACKLOG)
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",  # notification channel secrets (FERRY_SECRETS)
    "storage.googleapis.com",
)
WEB_APIS = ("compute.googleapis.com", "iap.googleapis.com")  # the load balancer and Identity-Aware Proxy
# The only roles a Ferry identity may hold on the whole project, and why each cannot be narrower.
# Everything else is granted on one resource (a topic, a bucket, a function, a service account). Not
# secretmanager.secretAccessor: notify reads a channel secret only when its team granted it on that one
# secret (docs/security.md, "Channel secrets") — never every secret of the project.
PROJECT_ROLES: dict[str, str] = {
    "roles/datastore.user": "Firestore has no per-collection IAM; the data model is one database",
    "roles/datastore.viewer": "read-only Firestore (the dashboard, ingest's event types)",
    "roles/logging.viewer": "execution logs are read through Cloud Logging queries (styx logs)",
    "roles/monitoring.viewer": "Gabo's scaler reads subscription backlog metrics",
    "roles/pubsub.viewer": "Gabo's workers read subscription metadata of per-type subscriptions",
    "roles/run.developer": "Styx creates one Cloud Run job per workflow at run time (ferry-styx only)",
    "custom:ferryEventTypeProvisioner": "applying an EventType creates its topics and subscriptions and grants "
                                        "access on those (IAM has no 'topics created later' scope); the "
                                        "scale tick's reconcile recreates missing ones",
    "custom:ferryExecutionController": "halting an instance cancels its Cloud Run execution",
}
# Who may hold a project role outside PROJECT_ROLES' general ones: role → the only accounts.
PROJECT_ROLE_HOLDERS: dict[str, tuple[str, ...]] = {
    "custom:ferryEventTypeProvisioner": ("ferry-api", "ferry-gabo-worker"),
    "roles/run.developer": ("ferry-styx",),
}
# Shown in a dry run when the project number is not given; resolved with gcloud before applying.
PROJECT_NUMBER_PLACEHOLDER = "PROJECT_NUMBER"


@dataclass(frozen=True)
class Step:
    """One idempotent deployment step.

    ``request`` is what is sent: a client-library request dict, or a gcloud argv (list of str).
    ``probe`` is the gcloud argv that reads the current state (gcloud steps only); ``expect``
    what the probe must show for the step to be unchanged (IAM: member and role).
    ``needs_urls`` marks steps that target function URLs (resolved after the functions deploy).
    """

    kind: Kind
    name: str
    description: str
    via: Via
    request: Any
    probe: list[str] | None = None
    expect: dict[str, str] = field(default_factory=dict)
    needs_urls: bool = False
    needs_backend_ids: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def function_url(project: str, region: str, name: str) -> str:
    """The deterministic URL of a 2nd-gen function (used by dry runs; apply reads the real one)."""
    return f"https://{region}-{project}.cloudfunctions.net/{name}"


def backend_service(fn: str) -> str:
    """The backend service that fronts function ``fn`` behind the load balancer (one per serverless NEG)."""
    return f"ferry-{fn}-web"


def iap_audience(project_number: str, backend_id: str) -> str:
    """The ``aud`` of IAP's signed header for a backend service (docs/security.md)."""
    return f"/projects/{project_number}/global/backendServices/{backend_id}"


def _sa(name: str, project: str) -> str:
    return f"{name}@{project}.iam.gserviceaccount.com"


def _pubsub_agent(project_number: str) -> str:
    return f"service-{project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"


def _iam_step(name: str, description: str, add: list[str], get: list[str], member: str, role: str) -> Step:
    return Step("iam", name, description, "gcloud",
                [*add, f"--member={member}", f"--role={role}", "--quiet"],
                probe=[*get, "--format=json"], expect={"member": member, "role": role})


def _env_flag(env: Mapping[str, str]) -> str:
    pairs = [f"{k}={v}" for k, v in sorted(env.items())]
    # gcloud's alternate-delimiter syntax when a value holds a comma
    if any("," in p for p in pairs):
        return "--set-env-vars=^|^" + "|".join(pairs)
    return "--set-env-vars=" + ",".join(pairs)


def source_digest(source_dir: str | Path) -> str:
    """A digest of every file of the deploy bundle (so an unchanged bundle redeploys nothing)."""
    root = Path(source_dir)
    h = hashlib.sha256()
    if not root.is_dir():
        return "unbuilt"
    for f in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cloud_env(infra: Infra, project: str, region: str) -> dict[str, str]:
    """The environment every deployed function starts from: ``cloud_env`` with placeholders filled in."""
    return {k: substitute(v, project, region) for k, v in sorted(infra.cloud_env.items())}


def operator_callers(infra: Infra, fn: Function, project: str) -> list[str]:
    """The service accounts that call ``fn`` on a schedule or by Pub/Sub push (its operational callers)."""
    accounts = {j.service_account for j in infra.scheduler_jobs if j.function == fn.name}
    accounts |= {fn.pubsub.service_account} if fn.pubsub else set()
    return sorted(_sa(a, project) for a in accounts)


def event_type_access(infra: Infra, project: str, project_number: str | None = None) -> dict[str, str]:
    """Who gets what on each event type's own Pub/Sub resources when Gabo provisions them at apply: the
    accounts declaring ``event_type_access`` (publish on its topics, subscribe on its subscriptions), and
    the Pub/Sub service agent (publish on its dead-letter topic, subscribe on its delivery subscription:
    what dead-lettering needs)."""
    def members(access: str) -> str:
        return ",".join(sorted(f"serviceAccount:{_sa(a.name, project)}" for a in infra.service_accounts
                               if access in a.event_type_access))

    env = {"FERRY_GABO_PUBLISHERS": members("publish"), "FERRY_GABO_SUBSCRIBERS": members("subscribe"),
           "FERRY_PUBSUB_AGENT": f"serviceAccount:{_pubsub_agent(project_number or PROJECT_NUMBER_PLACEHOLDER)}"}
    return {k: v for k, v in env.items() if v}


def function_env(infra: Infra, fn: Function, project: str, region: str,
                 project_number: str | None = None, backend_ids: Mapping[str, str] | None = None) -> dict[str, str]:
    """A deployed function's environment: cloud_env, then the project and region, then its own env, then
    what identifies callers (its name, the audience its ID tokens carry, its operational callers), the
    first admins (infra's ``admins``) and the grants Gabo's provisioning makes.

    FERRY_IDENTITY is oidc (verified ID tokens) whatever cloud_env says; anything else is a
    ValidationError: header identity is for the local stack only. No admins is a ValidationError too:
    teams would be open to anyone.
    """
    if not infra.admins:
        raise ValidationError("name Ferry's first admins (e-mails): `admins:` in infra/core.yaml or "
                              "ferry deploy --admin EMAIL; without them anyone could create a team")
    env = {**cloud_env(infra, project, region), "GOOGLE_CLOUD_PROJECT": project, "FERRY_REGION": region,
           **fn.env, "FERRY_FUNCTION": fn.name,
           "FERRY_AUDIENCES": ",".join([function_url(project, region, fn.name), *infra.audiences]),
           "FERRY_TIMEOUT_S": str(fn.timeout_seconds), "FERRY_ADMINS": ",".join(infra.admins),
           **event_type_access(infra, project, project_number)}
    callers = operator_callers(infra, fn, project)
    if callers:
        env["FERRY_OPERATOR_CALLERS"] = ",".join(callers)
    runners = sorted({t if "@" in t else _sa(t, project) for a in infra.service_accounts for t in a.act_as})
    if runners:  # what workflows may run as (apply refuses others); the first is the default runner
        env["FERRY_RUNNER_ACCOUNTS"] = ",".join(runners)
    if infra.web.domain and fn.name in infra.web.functions:  # people in browsers, through IAP
        backend = backend_service(fn.name)
        env["FERRY_IAP_AUDIENCE"] = iap_audience(project_number or PROJECT_NUMBER_PLACEHOLDER,
                                                 (backend_ids or {}).get(backend) or f"ID_OF_{backend}")
    if env.setdefault("FERRY_IDENTITY", "oidc") != "oidc":
        raise ValidationError(f"function {fn.name}: FERRY_IDENTITY must be oidc when deployed, not "
                              f"{env['FERRY_IDENTITY']!r} (header identity is for the local stack only)")
    return env


# Cloud Storage bucket names: 3-63 characters, lowercase letters, digits, '-', '_' and '.', starting
# and ending with a letter or digit (longer dotted names need domain verification; not supported).
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$")


def _bucket_steps(b: Bucket, project: str, region: str) -> list[Step]:
    name = substitute(b.name, project, region)
    if not _BUCKET_NAME.match(name) or name.startswith("goog") or "google" in name:
        raise ValidationError(f"bucket {b.name}: {name!r} is not a valid Cloud Storage bucket name")
    location = substitute(b.location, project, region).upper()
    resource: dict[str, Any] = {
        "name": name,
        "location": location,
        "storageClass": b.storage_class,
        "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": b.uniform_access},
                             "publicAccessPrevention": b.public_access_prevention},
        "lifecycle": {"rule": [r.to_gcs() for r in b.lifecycle]},
        "labels": {**b.labels, "managed-by": "ferry"},
    }
    if b.retention:
        resource["retentionPolicy"] = {"retentionPeriod": str(int(parse_duration(b.retention).total_seconds()))}
    rules = "; ".join(f"{'delete' if r.action == 'Delete' else f'move to {r.storage_class}'} "
                      f"{' '.join(r.prefixes) or 'every object'} after {r.age_days} days" for r in b.lifecycle)
    desc = (f"bucket gs://{name} in {location} ({b.storage_class}"
            f"{', uniform access' if b.uniform_access else ''}"
            f"{', public access prevented' if b.public_access_prevention == 'enforced' else ''}"
            f"{'; ' + rules if rules else ''}{'; retention ' + b.retention if b.retention else ''})")
    steps = [Step("bucket", name, desc, "storage", {"project": project, "bucket": resource})]
    for m in b.members:
        member = f"serviceAccount:{_sa(m.service_account, project)}"
        steps.append(Step("bucket_iam", f"{name}:{m.service_account}:{m.role.removeprefix('roles/')}",
                          f"grant {m.role} to {m.service_account} on bucket gs://{name} only", "storage",
                          {"bucket": name, "member": member, "role": m.role},
                          expect={"member": member, "role": m.role}))
    return steps


def _function_step(fn: Function, env: Mapping[str, str], project: str, region: str, source_dir: str,
                   digest: str) -> Step:
    argv = [
        "gcloud", "functions", "deploy", fn.name, "--gen2",
        f"--project={project}", f"--region={region}",
        f"--runtime={RUNTIME}", f"--source={source_dir}", f"--entry-point={fn.entry_point}",
        # Every function is HTTP-served: Pub/Sub reaches the others through our explicit push
        # subscription (the CloudEvent signature comes from the functions-framework decorator).
        "--trigger-http",
        f"--memory={fn.memory}", f"--cpu={fn.cpu}", f"--timeout={fn.timeout_seconds}s",
        f"--min-instances={fn.min_instances}", f"--max-instances={fn.max_instances}",
        f"--concurrency={fn.concurrency}",
        f"--service-account={_sa(fn.service_account, project)}",
        _env_flag(env),
        f"--ingress-settings={fn.ingress}",
        "--no-allow-unauthenticated",
    ]
    # The fingerprint label (config + bundle) lets a second deploy see "unchanged" without rebuilding.
    fingerprint = hashlib.sha256(json.dumps([argv, digest]).encode()).hexdigest()[:16]
    argv += [f"--update-labels=managed-by=ferry,ferry-fingerprint={fingerprint}", "--quiet"]
    return Step("function", fn.name,
                f"deploy function {fn.name} ({fn.entry_point}, {fn.memory}, {fn.timeout_seconds}s, "
                f"{fn.min_instances}..{fn.max_instances} instances, as {fn.service_account})",
                "gcloud", argv,
                probe=["gcloud", "functions", "describe", fn.name, "--gen2", f"--project={project}",
                       f"--region={region}", "--format=json"],
                expect={"fingerprint": fingerprint})


def _dead_letter_steps(kind: str, name: str, topic: str, dead_letter_topic: str, project: str,
                       agent: str) -> list[Step]:
    """The Pub/Sub service agent must publish to the dead-letter topic and ack on the source."""
    return [
        _iam_step(f"{dead_letter_topic}:publisher", f"let the Pub/Sub service agent publish dead letters "
                  f"to {dead_letter_topic}",
                  ["gcloud", "pubsub", "topics", "add-iam-policy-binding", dead_letter_topic, f"--project={project}"],
                  ["gcloud", "pubsub", "topics", "get-iam-policy", dead_letter_topic, f"--project={project}"],
                  f"serviceAccount:{agent}", "roles/pubsub.publisher"),
        _iam_step(f"{name}:subscriber", f"let the Pub/Sub service agent ack dead-lettered messages of {kind} {name}",
                  ["gcloud", "pubsub", "subscriptions", "add-iam-policy-binding", name, f"--project={project}"],
                  ["gcloud", "pubsub", "subscriptions", "get-iam-policy", name, f"--project={project}"],
                  f"serviceAccount:{agent}", "roles/pubsub.subscriber"),
    ]


def _hold_access_steps(infra: Infra, project: str) -> list[Step]:
    """``ferry dead-letters`` and ``ferry replay --dead-letters`` are API routes: the ``api`` function's
    account reads infra/'s dead-letter holds (subscriber on each hold, nothing else). It gets no new
    publish grant: it already publishes to ``ferry-alerts`` (notifications replay), while publishing work
    orders, close orders or landings stays with their own publishers (docs/gabo.md)."""
    readers = sorted({f.service_account for f in infra.functions if f.name == "api"})
    return [_iam_step(f"{hold.name}:subscriber:{account}", f"let {account} count and replay the dead letters "
                      f"held by {hold.name}",
                      ["gcloud", "pubsub", "subscriptions", "add-iam-policy-binding", hold.name, f"--project={project}"],
                      ["gcloud", "pubsub", "subscriptions", "get-iam-policy", hold.name, f"--project={project}"],
                      f"serviceAccount:{_sa(account, project)}", "roles/pubsub.subscriber")
            for hold in infra.dead_letter_holds() for account in readers]


def _push_subscription(fn: Function, trig: PubSubTrigger, project: str, region: str, url: str) -> dict[str, Any]:
    # the token's audience is the one the function is configured to accept (FERRY_AUDIENCES): the
    # function never derives an audience from the request
    return push_subscription_request(trig, project, url, oidc_account=_sa(trig.service_account, project),
                                     audience=function_url(project, region, fn.name))


def _database_step(infra: Infra, project: str, region: str) -> Step:
    """Ferry's Firestore database: ``(default)``, native mode (a new project has none; one in Datastore
    mode cannot be converted — apply stops naming it)."""
    location = substitute(infra.firestore_location, project, region)
    return Step("database", DATABASE, f"Firestore database {DATABASE} in native mode in {location}",
                "firestore_admin",
                {"parent": f"projects/{project}", "database_id": DATABASE,
                 "database": {"location_id": location, "type_": "FIRESTORE_NATIVE",
                              "concurrency_mode": "OPTIMISTIC"}})


def _web_step(name: str, description: str, create: list[str], describe: list[str], contains: str = "") -> Step:
    """A load-balancer or IAP resource: describe it; create (or add) when it is absent (or lacks ``contains``)."""
    return Step("web", name, description, "gcloud", [*create, "--quiet"], probe=[*describe, "--format=json"],
                expect={"contains": contains} if contains else {})


def _web_steps(infra: Infra, project: str, region: str) -> list[Step]:
    """People in browsers: a global external HTTPS load balancer at ``web.domain`` (address, managed
    certificate, URL map: /v1/* to the api, the rest to the dashboard), one serverless NEG and backend
    service per function with IAP on, and who may pass IAP (docs/deploy.md, "People in a browser")."""
    web = infra.web
    p = f"--project={project}"
    steps: list[Step] = [_web_step("address:ferry-web-ip", "a global IP address for the load balancer",
                                   ["gcloud", "compute", "addresses", "create", "ferry-web-ip", "--global", p],
                                   ["gcloud", "compute", "addresses", "describe", "ferry-web-ip", "--global", p])]
    for fn in web.functions:
        neg, backend = f"ferry-{fn}-neg", backend_service(fn)
        steps += [
            _web_step(f"neg:{neg}", f"serverless NEG {neg} → function {fn} (its Cloud Run service)",
                      ["gcloud", "compute", "network-endpoint-groups", "create", neg, f"--region={region}",
                       "--network-endpoint-type=serverless", f"--cloud-run-service={fn}", p],
                      ["gcloud", "compute", "network-endpoint-groups", "describe", neg, f"--region={region}", p]),
            _web_step(f"backend:{backend}", f"backend service {backend} with Identity-Aware Proxy on",
                      ["gcloud", "compute", "backend-services", "create", backend, "--global",
                       "--load-balancing-scheme=EXTERNAL_MANAGED", "--iap=enabled", p],
                      ["gcloud", "compute", "backend-services", "describe", backend, "--global", p]),
            _web_step(f"backend:{backend}:{neg}", f"NEG {neg} as the backend of {backend}",
                      ["gcloud", "compute", "backend-services", "add-backend", backend, "--global",
                       f"--network-endpoint-group={neg}", f"--network-endpoint-group-region={region}", p],
                      ["gcloud", "compute", "backend-services", "describe", backend, "--global", p],
                      contains=f"networkEndpointGroups/{neg}"),
        ]
    api = "api" if "api" in web.functions else web.functions[0]
    default = next((f for f in web.functions if f != api), api)
    steps += [
        _web_step("url-map:ferry-web", f"URL map ferry-web: /v1/* → {api}, everything else → {default}",
                  ["gcloud", "compute", "url-maps", "create", "ferry-web", f"--default-service={backend_service(default)}",
                   "--global", p],
                  ["gcloud", "compute", "url-maps", "describe", "ferry-web", "--global", p]),
        _web_step("url-map:ferry-web:paths", f"route {web.domain}/v1/* to {backend_service(api)}",
                  ["gcloud", "compute", "url-maps", "add-path-matcher", "ferry-web", "--path-matcher-name=ferry-paths",
                   f"--default-service={backend_service(default)}", f"--new-hosts={web.domain}",
                   f"--path-rules=/v1/*={backend_service(api)}", "--global", p],
                  ["gcloud", "compute", "url-maps", "describe", "ferry-web", "--global", p], contains="ferry-paths"),
        _web_step("ssl-certificate:ferry-web-cert", f"a Google-managed certificate for {web.domain}",
                  ["gcloud", "compute", "ssl-certificates", "create", "ferry-web-cert", f"--domains={web.domain}",
                   "--global", p],
                  ["gcloud", "compute", "ssl-certificates", "describe", "ferry-web-cert", "--global", p]),
        _web_step("https-proxy:ferry-web-proxy", "the HTTPS proxy (URL map + certificate)",
                  ["gcloud", "compute", "target-https-proxies", "create", "ferry-web-proxy", "--url-map=ferry-web",
                   "--ssl-certificates=ferry-web-cert", "--global", p],
                  ["gcloud", "compute", "target-https-proxies", "describe", "ferry-web-proxy", "--global", p]),
        _web_step("forwarding-rule:ferry-web-https", f"https://{web.domain} (port 443 on ferry-web-ip)",
                  ["gcloud", "compute", "forwarding-rules", "create", "ferry-web-https", "--global",
                   "--load-balancing-scheme=EXTERNAL_MANAGED", "--address=ferry-web-ip",
                   "--target-https-proxy=ferry-web-proxy", "--ports=443", p],
                  ["gcloud", "compute", "forwarding-rules", "describe", "ferry-web-https", "--global", p]),
    ]
    for fn in web.functions:
        target = ["--resource-type=backend-services", f"--service={backend_service(fn)}", p]
        for member in web.members:
            steps.append(_iam_step(f"{backend_service(fn)}:iap:{member}",
                                   f"let {member} through Identity-Aware Proxy to {fn}",
                                   ["gcloud", "iap", "web", "add-iam-policy-binding", *target],
                                   ["gcloud", "iap", "web", "get-iam-policy", *target],
                                   member, "roles/iap.httpsResourceAccessor"))
    return steps


def plan(infra: Infra, project: str, region: str, source_dir: str | Path,
         urls: Mapping[str, str] | None = None, project_number: str | None = None,
         backend_ids: Mapping[str, str] | None = None) -> list[Step]:
    """The complete ordered deployment of ``infra`` to ``project``/``region``.

    Args:
        infra: the merged description (``ferry.infra.model.load()``).
        source_dir: the deploy bundle (``ferry.deploy.bundle.build``); functions deploy from it.
        urls: function name → URL; defaults to the deterministic ``cloudfunctions.net`` URL.
        project_number: for the Pub/Sub service agent's grants; a placeholder when None.
        backend_ids: backend service name → numeric id (IAP's audience, read once they exist).
    Returns:
        Steps in the order they must be applied; the same inputs give the same plan.
    """
    source_dir = str(source_dir)
    digest = source_digest(source_dir)
    agent = _pubsub_agent(project_number or PROJECT_NUMBER_PLACEHOLDER)

    def url(name: str) -> str:
        return (urls or {}).get(name) or function_url(project, region, name)

    apis = (*APIS, *WEB_APIS) if infra.web.domain else APIS
    steps: list[Step] = [Step("apis", "services", f"enable {len(apis)} APIs", "gcloud",
                              ["gcloud", "services", "enable", *apis, f"--project={project}", "--quiet"],
                              probe=["gcloud", "services", "list", "--enabled", f"--project={project}",
                                     "--format=value(config.name)"],
                              expect={"apis": " ".join(apis)})]

    for sa in infra.service_accounts:
        email = _sa(sa.name, project)
        steps.append(Step("service_account", sa.name, f"service account {email}", "gcloud",
                          ["gcloud", "iam", "service-accounts", "create", sa.name, f"--project={project}",
                           f"--display-name={sa.name}", f"--description={sa.description or sa.name}", "--quiet"],
                          probe=["gcloud", "iam", "service-accounts", "describe", email, f"--project={project}",
                                 "--format=json"]))
    for cr in infra.custom_roles:
        perms = ",".join(sorted(cr.permissions))
        steps.append(Step("custom_role", cr.name, f"custom role {cr.name}: {perms}", "gcloud",
                          ["gcloud", "iam", "roles", "create", cr.name, f"--project={project}",
                           f"--title={cr.title}", f"--description={cr.description or cr.title}",
                           f"--permissions={perms}", "--stage=GA", "--quiet"],
                          probe=["gcloud", "iam", "roles", "describe", cr.name, f"--project={project}",
                                 "--format=json"], expect={"permissions": perms}))
    for sa in infra.service_accounts:
        for role in sa.roles:
            _check_project_role(sa.name, role)
            granted = f"projects/{project}/roles/{role[7:]}" if role.startswith("custom:") else role
            steps.append(_iam_step(f"{sa.name}:{role}", f"grant {granted} to {sa.name} on the project",
                                   ["gcloud", "projects", "add-iam-policy-binding", project, "--condition=None"],
                                   ["gcloud", "projects", "get-iam-policy", project],
                                   f"serviceAccount:{_sa(sa.name, project)}", granted))
    for sa in infra.service_accounts:
        for target in sa.act_as:
            email = target if "@" in target else _sa(target, project)
            steps.append(_iam_step(f"{email}:user:{sa.name}", f"let {sa.name} run things as {email} (only)",
                                   ["gcloud", "iam", "service-accounts", "add-iam-policy-binding", email,
                                    f"--project={project}"],
                                   ["gcloud", "iam", "service-accounts", "get-iam-policy", email,
                                    f"--project={project}"],
                                   f"serviceAccount:{_sa(sa.name, project)}", "roles/iam.serviceAccountUser"))

    # Buckets before anything that writes to them; their grants are scoped to the bucket.
    for b in infra.buckets:
        steps += _bucket_steps(b, project, region)

    # The database before its indexes and before any function that reads or writes it.
    steps.append(_database_step(infra, project, region))
    for ix in infra.indexes:
        fields = [{"field_path": f.field, **({"array_config": f.array_config} if f.array_config
                                             else {"order": f.order or "ASCENDING"})} for f in ix.fields]
        steps.append(Step("index", f"{ix.collection}({', '.join(f.field for f in ix.fields)})",
                          f"Firestore composite index on {ix.collection}: "
                          + ", ".join(f"{f.field} {f.array_config or f.order}" for f in ix.fields),
                          "firestore_admin",
                          {"parent": f"projects/{project}/databases/{DATABASE}/collectionGroups/{ix.collection}",
                           "index": {"query_scope": ix.query_scope, "fields": fields}}))

    for t in infra.topics:
        steps.append(Step("topic", t.name, f"topic {t.name} (retention {t.retention})", "pubsub",
                          {"name": f"projects/{project}/topics/{t.name}",
                           "message_retention_duration": duration(t.retention)}))
    for t in infra.topics:
        for role, members in (("roles/pubsub.publisher", t.publishers), ("roles/pubsub.subscriber", t.subscribers)):
            for m in members:
                member = m if ":" in m else f"serviceAccount:{_sa(m, project)}"
                steps.append(_iam_step(f"{t.name}:{role.rsplit('.', 1)[-1]}:{m}",
                                       f"grant {role} on topic {t.name} only to {m}",
                                       ["gcloud", "pubsub", "topics", "add-iam-policy-binding", t.name,
                                        f"--project={project}"],
                                       ["gcloud", "pubsub", "topics", "get-iam-policy", t.name, f"--project={project}"],
                                       member, role))

    dead_letter_grants: list[Step] = []
    for s in infra.pull_subscriptions():
        req = pull_subscription_request(s, project)
        desc = f"pull subscription {s.name} on {s.topic} (ack {s.ack_deadline_seconds}s, retention {s.retention}"
        if s.dead_letter_topic:
            desc += f", dead letters to {s.dead_letter_topic} after {s.max_delivery_attempts} attempts"
            dead_letter_grants += _dead_letter_steps("subscription", s.name, s.topic, s.dead_letter_topic,
                                                     project, agent)
        steps.append(Step("subscription", s.name, desc + ")", "pubsub", req))
    steps += dead_letter_grants
    steps += _hold_access_steps(infra, project)

    # The load balancer's backend services exist before the functions behind IAP: their ids are the
    # audience of IAP's signed header, which those functions verify (FERRY_IAP_AUDIENCE).
    if infra.web.domain:
        steps += _web_steps(infra, project, region)
    for fn in infra.functions:
        env = function_env(infra, fn, project, region, project_number, backend_ids)
        step = _function_step(fn, env, project, region, source_dir, digest)
        if infra.web.domain and fn.name in infra.web.functions:
            step = Step(**{**step.__dict__, "needs_backend_ids": True})
        steps.append(step)

    # Who may call which function: scheduler jobs' and push subscriptions' identities, each only
    # on the functions it calls (roles/run.invoker on the function's Cloud Run service).
    callers: dict[tuple[str, str], str] = {}
    for j in infra.scheduler_jobs:
        callers.setdefault((j.service_account, j.function), f"scheduler job {j.name}")
    for fn, trig in infra.push_subscriptions():
        callers.setdefault((trig.service_account, fn.name), f"push subscription {trig.subscription}")
    people = {(m, f.name): f"people-facing function {f.name}" for f in infra.functions for m in f.invokers}
    if infra.web.domain:  # IAP calls the functions behind it as its service agent
        iap_agent = f"serviceAccount:service-{project_number or PROJECT_NUMBER_PLACEHOLDER}@gcp-sa-iap.iam.gserviceaccount.com"
        people.update({(iap_agent, f): f"Identity-Aware Proxy in front of {f}" for f in infra.web.functions})
    for (member, fname), why in people.items():
        steps.append(_iam_step(f"{fname}:invoker:{member}", f"let {member} invoke {fname} ({why})",
                               ["gcloud", "run", "services", "add-iam-policy-binding", fname,
                                f"--project={project}", f"--region={region}"],
                               ["gcloud", "run", "services", "get-iam-policy", fname,
                                f"--project={project}", f"--region={region}"], member, "roles/run.invoker"))
    for (account, fname), why in callers.items():
        steps.append(_iam_step(f"{fname}:invoker:{account}", f"let {account} invoke {fname} ({why})",
                               ["gcloud", "run", "services", "add-iam-policy-binding", fname,
                                f"--project={project}", f"--region={region}"],
                               ["gcloud", "run", "services", "get-iam-policy", fname,
                                f"--project={project}", f"--region={region}"],
                               f"serviceAccount:{_sa(account, project)}", "roles/run.invoker"))

    push = infra.push_subscriptions()
    for account in sorted({trig.service_account for _, trig in push}):
        # Pub/Sub mints the push OIDC tokens as this account (granted by default only on new projects).
        steps.append(_iam_step(f"{account}:token-creator", f"let the Pub/Sub service agent sign OIDC "
                               f"tokens as {account}",
                               ["gcloud", "iam", "service-accounts", "add-iam-policy-binding",
                                _sa(account, project), f"--project={project}"],
                               ["gcloud", "iam", "service-accounts", "get-iam-policy", _sa(account, project),
                                f"--project={project}"],
                               f"serviceAccount:{agent}", "roles/iam.serviceAccountTokenCreator"))
    dead_letter_grants = []
    for fn, trig in push:
        steps.append(Step("push_subscription", trig.subscription,
                          f"push {trig.topic} → function {fn.name} (OIDC as {trig.service_account}, ack "
                          f"{trig.ack_deadline_seconds}s, backoff {trig.min_backoff_seconds}..{trig.max_backoff_seconds}s, "
                          f"dead letters to {trig.dead_letter_topic} after {trig.max_delivery_attempts} attempts)",
                          "pubsub", _push_subscription(fn, trig, project, region, url(fn.name)), needs_urls=True))
        dead_letter_grants += _dead_letter_steps("push subscription", trig.subscription, trig.topic,
                                                 trig.dead_letter_topic, project, agent)
    steps += dead_letter_grants

    for j in infra.scheduler_jobs:
        target = url(j.function)
        steps.append(Step("scheduler_job", j.name,
                          f"every '{j.schedule}' ({j.time_zone}) POST {j.function}{j.path} with OIDC as "
                          f"{j.service_account}", "scheduler",
                          {"parent": f"projects/{project}/locations/{region}",
                           "job": {
                               "name": f"projects/{project}/locations/{region}/jobs/{j.name}",
                               "description": j.description,
                               "schedule": j.schedule,
                               "time_zone": j.time_zone,
                               "attempt_deadline": {"seconds": j.attempt_deadline_seconds},
                               "http_target": {
                                   "uri": target.rstrip("/") + "/" + j.path.lstrip("/") if j.path != "/" else target,
                                   "http_method": "POST",
                                   "headers": {"Content-Type": "application/json"},
                                   "body": json.dumps(j.body, sort_keys=True).encode(),
                                   # the audience the function is configured to accept (FERRY_AUDIENCES)
                                   "oidc_token": {"service_account_email": _sa(j.service_account, project),
                                                  "audience": function_url(project, region, j.function)},
                               },
                           }}, needs_urls=True))
    return _dedupe(steps)


def _check_project_role(account: str, role: str) -> None:
    """Refuse a project-wide role outside the allow-list, or held by an account it is not meant for."""
    if role not in PROJECT_ROLES:
        raise ValidationError(f"service account {account}: {role} may not be granted on the whole project; grant "
                              f"it on the resource (topic, bucket, function, account) or add it to PROJECT_ROLES "
                              f"with the reason", {"account": account, "role": role})
    holders = PROJECT_ROLE_HOLDERS.get(role)
    if holders is not None and account not in holders:
        raise ValidationError(f"service account {account}: {role} on the project is for {', '.join(holders)} only",
                              {"account": account, "role": role})


def _dedupe(steps: list[Step]) -> list[Step]:
    """The same grant asked twice (two subscriptions dead-lettering to one topic) is one step."""
    seen: set[tuple[str, str]] = set()
    out = []
    for s in steps:
        if (s.kind, s.name) in seen:
            continue
        seen.add((s.kind, s.name))
        out.append(s)
    return out
