"""The Cloud Run jobs launcher: jobs named by what they hold, one execution per instance attempt.

**A job's id proves its content.** A job is created from a workflow's container — image, command,
cpu, memory, service account, timeout, labels: its *shape* — and never updated. Its id is
``styx-<readable part of the workflow name>-<16 hex of a SHA-256 over the workflow's full name and the
shape>`` (``job_id``), so two workflows (whatever their names: ``team.daily`` and ``team-daily``, two
names sharing 50 characters) or two shapes of one workflow never share a job, and a job found under an
id holds exactly what that id was made from. So no launcher ever trusts a cache about what a job
holds: a process remembers only that an id existed; if the job was deleted since (evicted), RunJob
answers NOT_FOUND and the job is created again. A workflow whose image changes gets a new job; the old
one idles and is evicted.

**At most ``max_jobs`` jobs in the region** (Cloud Run allows 1,000 per project and region): the jobs
form a pool evicting the least recently used *idle* job (its newest execution ended more than
``idle_grace`` ago, none of its executions running; one never run was created more than ``idle_grace``
ago) before creating one over the bound, and when the platform refuses a CreateJob for its limit. The
delete carries the job's etag: a job run since the listing is not deleted. docs/styx.md weighs this
against a job per execution and jobs shared across workflows.

``launch`` runs the job with per-execution overrides of args, env and timeout (``FERRY_EXECUTION_ID``
in its env names the execution: ``find`` looks for it among the workflow's jobs' executions). A quota
refusal (HTTP 429 / RESOURCE_EXHAUSTED) raises ``Throttled``: nothing was started. CreateJob and DeleteJob
take a token of the per-minute Admin API quota through ``quota`` (shared by every tick; RunJob's token
is taken in the dequeue commit). ``poll`` reads the execution and its task's exit code; ``cancel``
cancels the execution; ``logs`` reads the execution's entries from Cloud Logging. The clients are
injectable (tests run against a local fake of the Run v2 gRPC services); nothing connects until first use.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from ferry.errors import InfraError, NotFound
from ferry.styx.launchers import Launched, LaunchSpec, Status, Throttled


@contextmanager
def _translated(what: str) -> Iterator[None]:
    from google.api_core import exceptions as gexc

    try:
        yield
    except gexc.NotFound as exc:
        raise NotFound(f"{what}: {exc.message}") from exc
    except gexc.TooManyRequests as exc:  # HTTP 429 / gRPC RESOURCE_EXHAUSTED (ResourceExhausted is one)
        raise Throttled(f"Cloud Run {what}: {exc.message}") from exc
    except gexc.GoogleAPICallError as exc:
        raise InfraError(f"Cloud Run {what} failed: {exc.message}") from exc


# Executions of a job that ``find`` looks through, newest first: a submission record is found lost
# minutes after the launch, and a job gets at most a few executions a minute.
FIND_SCAN = 500
EXECUTION_ENV = "FERRY_EXECUTION_ID"
# Cloud Run's ids: lowercase letters, digits and hyphens, starting with a letter, not ending with a
# hyphen, fewer than 50 characters (docs/styx.md cites the rule); executions and tasks are named by
# suffixing the job's name, which keeps theirs within 63.
MAX_JOB_ID = 49
DIGEST = 16                   # hex characters of the SHA-256 in a job id (64 bits)
JOB_LIMIT = 1000              # jobs per project and region (Cloud Run quotas)
RUNNING_LIMIT = 1000          # running executions per project and region (Cloud Run quotas)
POOL_FRESH = 60.0             # seconds a listing of the region's jobs is trusted for counting them
FULL_WAIT = 30.0              # seconds a process that found no idle job to evict waits before listing again
EVICT_BATCH = 10              # an eviction makes room for this many more jobs (one listing per ten creates)
MANAGED = "ferry-styx"        # label ``managed-by`` of the jobs this launcher keeps (and may evict)
WORKFLOW_LABEL = "ferry-workflow-hash"  # the workflow's full-name hash: ``find`` lists its jobs by it


def _env(spec: LaunchSpec) -> dict[str, str]:
    return {**spec.env, EXECUTION_ENV: spec.execution_id}


def _execution_id(execution: Any) -> str | None:
    for container in execution.template.containers:
        for var in container.env:
            if var.name == EXECUTION_ENV:
                return str(var.value)
    return None


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def workflow_hash(workflow: str) -> str:
    return _digest(workflow)[:DIGEST]


def shape(spec: LaunchSpec, account: str | None) -> dict[str, Any]:
    """Everything a job holds: the workflow's full name and its container (never args or env: those
    are each execution's overrides)."""
    return {"workflow": spec.workflow, "image": spec.image, "command": list(spec.command), "cpu": spec.cpu,
            "memory": spec.memory, "service_account": account or "",
            "timeout": int(spec.timeout.total_seconds()), "labels": dict(spec.labels)}


def job_id(workflow: str, job_shape: dict[str, Any] | None = None) -> str:
    """A Cloud Run job id for ``workflow``'s job of ``job_shape``: ``styx-<slug>-<digest>``, valid
    (``MAX_JOB_ID``) and collision-free (the digest covers the full name and the shape)."""
    digest = _digest(job_shape if job_shape is not None else {"workflow": workflow})[:DIGEST]
    slug = re.sub(r"[^a-z0-9]+", "-", workflow.lower()).strip("-")
    room = MAX_JOB_ID - len("styx-") - 1 - DIGEST
    readable = slug[:room].strip("-")
    return f"styx-{readable}-{digest}" if readable else f"styx-{digest}"


def _seconds(ts: Any) -> float:
    return float(ts.timestamp()) if ts else 0.0


class CloudRunLauncher:
    def __init__(self, project: str, region: str, jobs: Any = None, executions: Any = None, tasks: Any = None,
                 logging_client: Any = None, *, max_jobs: int = JOB_LIMIT, idle_grace: float = 600.0,
                 quota: Callable[[str], bool] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.project = project
        self.region = region
        self._jobs, self._executions, self._tasks, self._logging = jobs, executions, tasks, logging_client
        self.logs_timeout = 15.0
        self.max_jobs = max_jobs
        self.idle_grace = idle_grace     # seconds after its newest execution ended before a job may be evicted
        self.quota = quota               # takes a token of the Admin API's per-minute quota; False: none left
        self.clock = clock
        self._known: set[str] = set()    # job names this process saw exist (never what they hold: the id says)
        self._pool: list[Any] | None = None  # the region's jobs as last listed (for eviction)
        self._created_since_list = 0
        self._listed_at = 0.0
        self._full_until = 0.0
        self._inflight = 0               # creates under way in this process
        self.evicted = 0                 # jobs this launcher deleted to make room
        self._lock = threading.Lock()
        self._evict_lock = threading.Lock()

    # clients, built on first use
    @property
    def jobs(self) -> Any:
        if self._jobs is None:
            from google.cloud import run_v2

            self._jobs = run_v2.JobsClient()
        return self._jobs

    @property
    def executions(self) -> Any:
        if self._executions is None:
            from google.cloud import run_v2

            self._executions = run_v2.ExecutionsClient()
        return self._executions

    @property
    def tasks(self) -> Any:
        if self._tasks is None:
            from google.cloud import run_v2

            self._tasks = run_v2.TasksClient()
        return self._tasks

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def job_name(self, spec: LaunchSpec) -> str:
        """The full name of the job ``spec`` runs in."""
        return f"{self.parent}/jobs/{job_id(spec.workflow, shape(spec, self._account(spec)))}"

    @staticmethod
    def _account(spec: LaunchSpec) -> str | None:
        # Without its own, a workflow runs as the deployment's default runner (never the compute default).
        return spec.service_account or default_runner()

    def _job(self, spec: LaunchSpec) -> Any:
        from google.cloud import run_v2
        from google.protobuf import duration_pb2

        container = run_v2.Container(image=spec.image, command=list(spec.command),
                                     resources=run_v2.ResourceRequirements(
                                         limits={"cpu": spec.cpu, "memory": spec.memory}))
        task = run_v2.TaskTemplate(containers=[container], max_retries=0,  # Styx owns retries
                                   timeout=duration_pb2.Duration(seconds=int(spec.timeout.total_seconds())))
        account = self._account(spec)
        if account:
            task.service_account = account
        labels = {**spec.labels, "managed-by": MANAGED, WORKFLOW_LABEL: workflow_hash(spec.workflow)}
        return run_v2.Job(labels=labels, template=run_v2.ExecutionTemplate(task_count=1, template=task))

    @staticmethod
    def _shape_of(job: Any) -> tuple[Any, ...]:
        c = job.template.template.containers[0] if job.template.template.containers else None
        return (c.image if c else None, tuple(c.command) if c else (), dict(c.resources.limits) if c else {},
                job.template.template.service_account or None, job.template.template.timeout.seconds,
                dict(job.labels))

    # -- the pool of jobs ---------------------------------------------------------------------------
    def ensure_job(self, spec: LaunchSpec) -> str:
        """The job of ``spec``'s shape, created if this process has not seen it exist. Returns its name."""
        name = self.job_name(spec)
        with self._lock:
            if name in self._known:
                return name
        self._create(name, self._job(spec))
        return name

    def _take(self, method: str) -> None:
        if self.quota is not None and not self.quota(method):
            raise Throttled(f"Cloud Run {method}: this minute's write requests are spent (FERRY_CLOUDRUN_WRITE_RATE)",
                            slow_down=False)  # Ferry's own count: nothing was refused, nothing to slow down

    def _create(self, name: str, job: Any) -> None:
        """Create the job ``name`` (an id made from ``job``'s content). At ``max_jobs``, or refused for
        the region's limit, idle jobs are evicted first; none idle: Throttled (the instance is requeued)."""

        jid = name.rsplit("/", 1)[-1]
        with self._evict_lock:
            if self._pool is None or self.clock() - self._listed_at > POOL_FRESH:
                self._list()
            if self._jobs_held() >= self.max_jobs:
                if self.clock() < self._full_until or not self._evict():
                    self._full_until = self.clock() + FULL_WAIT  # no idle job: do not list again for a while
                    raise Throttled(f"Cloud Run create job {name}: the region holds {self._jobs_held()} of "
                                    f"{self.max_jobs} jobs, none idle for {self.idle_grace:.0f} s", slow_down=False)
            self._inflight += 1  # counted before the create: this process's other threads see it
        try:
            self._create_counted(name, jid, job)
        finally:
            with self._evict_lock:
                self._inflight -= 1
        with self._evict_lock:
            self._created_since_list += 1
        with self._lock:
            self._known.add(name)

    def _create_counted(self, name: str, jid: str, job: Any) -> None:
        from google.api_core import exceptions as gexc

        for attempt in range(2):
            self._take("CreateJob")
            try:
                with _translated(f"create job {name}"):
                    try:
                        self.jobs.create_job(parent=self.parent, job=job, job_id=jid).result()
                    except gexc.AlreadyExists:
                        self._verify(name, job)
                break
            except Throttled as exc:
                with self._evict_lock:  # full (other jobs, other processes)? else it was the request rate
                    self._list()
                    if len(self._pool or []) < min(self.max_jobs, JOB_LIMIT):
                        if attempt:  # room, yet refused twice: the write rate (slow down)
                            raise
                        continue  # another process made room meanwhile: try again
                    if attempt:  # room made, then taken by another process's create: this launch waits
                        raise Throttled(exc.message, slow_down=False, stop=False) from exc
                    if not self._evict():
                        self._full_until = self.clock() + FULL_WAIT
                        raise Throttled(exc.message, slow_down=False) from exc

    def _jobs_held(self) -> int:
        return len(self._pool or []) + self._created_since_list + self._inflight

    def _verify(self, name: str, wanted: Any) -> None:
        """A job of this id exists (another process made it): it must hold what the id says."""
        current = self.jobs.get_job(name=name)
        if self._shape_of(current) != self._shape_of(wanted):
            raise InfraError(f"Cloud Run job {name} does not hold what its id says (made outside Ferry?)")

    def pool(self) -> list[Any]:
        """The jobs this launcher keeps in the region (label ``managed-by``), as listed now."""
        from google.cloud import run_v2

        with _translated(f"list jobs of {self.parent}"):
            jobs = list(self.jobs.list_jobs(request=run_v2.ListJobsRequest(parent=self.parent, page_size=1000)))
        return [j for j in jobs if j.labels.get("managed-by") == MANAGED]

    def _idle_since(self, job: Any) -> float | None:
        """When ``job`` was last used, if it is idle long enough to be evicted; None if not."""
        latest = job.latest_created_execution
        if latest.name:
            ended = _seconds(latest.completion_time)
            return ended if ended and ended <= self.clock() - self.idle_grace else None
        created = _seconds(job.create_time)
        return created if created <= self.clock() - self.idle_grace else None

    def _list(self) -> None:
        self._pool = self.pool()
        self._created_since_list = 0
        self._listed_at = self.clock()

    def _evict(self) -> bool:
        """Delete the least recently used idle jobs, down to ``EVICT_BATCH`` below ``max_jobs`` (held:
        ``_evict_lock``; the listing is refreshed if jobs were created since). True if room was made
        (by this process or, meanwhile, another)."""
        from google.api_core import exceptions as gexc
        from google.cloud import run_v2

        if self._created_since_list or self._pool is None:
            self._list()
        assert self._pool is not None
        idle = sorted(((since, j) for j in self._pool if (since := self._idle_since(j)) is not None),
                      key=lambda p: p[0])
        wanted = max(1, self._jobs_held() - self.max_jobs + EVICT_BATCH)
        # the least recently used, in a random order: two processes evicting at once rarely pick the same
        candidates = [j for _, j in idle[:3 * wanted]]
        random.shuffle(candidates)
        candidates += [j for _, j in idle[3 * wanted:]]
        made = 0
        for job in candidates:
            if made >= wanted:
                break
            try:
                if self._running(job.name):
                    continue
                self._take("DeleteJob")
                with _translated(f"delete job {job.name}"):
                    self.jobs.delete_job(request=run_v2.DeleteJobRequest(name=job.name, etag=job.etag)).result()
            except NotFound:  # another process evicted it (and made its own room with it)
                self._forget(job.name)
                continue
            except InfraError as exc:
                if isinstance(exc.__cause__, (gexc.Aborted, gexc.FailedPrecondition)):
                    continue  # run since it was listed: not idle
                raise
            self._forget(job.name)
            made += 1
        self.evicted += made
        return made > 0

    def _forget(self, job: str) -> None:
        self._pool = [j for j in self._pool or [] if j.name != job]
        with self._lock:
            self._known.discard(job)

    def _running(self, job: str) -> bool:
        """Whether any of the job's (newest 100) executions has not completed."""
        from google.cloud import run_v2

        with _translated(f"list executions of {job}"):
            page = self.executions.list_executions(request=run_v2.ListExecutionsRequest(parent=job, page_size=100))
            return any(not ex.completion_time for ex in itertools.islice(page, 100))

    # -- executions ---------------------------------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> Launched:
        from google.cloud import run_v2
        from google.protobuf import duration_pb2

        overrides = run_v2.RunJobRequest.Overrides(
            container_overrides=[run_v2.RunJobRequest.Overrides.ContainerOverride(
                args=list(spec.args), env=[run_v2.EnvVar(name=k, value=v) for k, v in _env(spec).items()],
                clear_args=not spec.args)],
            task_count=1, timeout=duration_pb2.Duration(seconds=int(spec.timeout.total_seconds())))
        name = self.ensure_job(spec)
        for attempt in range(2):
            try:
                with _translated(f"run job {name}"):
                    op = self.jobs.run_job(request=run_v2.RunJobRequest(name=name, overrides=overrides))
                    execution = op.metadata  # the Execution, known at once; the LRO ends when it completes
                break
            except NotFound:
                if attempt:
                    raise
                with self._lock:  # evicted since this process saw it: create it again (same id, same content)
                    self._known.discard(name)
                self.ensure_job(spec)
        if execution is None or not execution.name:
            raise InfraError(f"Cloud Run did not name the execution of {name}")
        return Launched(handle=execution.name, log_uri=execution.log_uri or None)

    def find(self, workflow: str, execution_id: str) -> Launched | None:
        """The execution whose env has ``FERRY_EXECUTION_ID=execution_id`` (an execution records its
        run's overrides in its template) among the newest ``FIND_SCAN`` of each of the workflow's jobs
        (label ``ferry-workflow-hash``; one ListJobs: a lost submission is rare); None if there is none."""
        from google.cloud import run_v2

        mine = workflow_hash(workflow)
        for job in self.pool():
            if job.labels.get(WORKFLOW_LABEL) != mine:
                continue
            try:
                with _translated(f"list executions of {job.name}"):
                    pages = self.executions.list_executions(
                        request=run_v2.ListExecutionsRequest(parent=job.name, page_size=100))
                    for ex in itertools.islice(pages, FIND_SCAN):
                        if _execution_id(ex) == execution_id:
                            return Launched(handle=ex.name, log_uri=ex.log_uri or None)
            except NotFound:
                continue  # evicted meanwhile: nothing of it runs
        return None

    def poll(self, handle: str) -> Status:
        with _translated(f"get execution {handle}"):
            ex = self.executions.get_execution(name=handle)
        if ex.cancelled_count:
            return Status("ended", None, "cancelled")
        finished = ex.succeeded_count + ex.failed_count
        if finished >= max(1, ex.task_count) or ex.completion_time:
            with _translated(f"list tasks of {handle}"):
                tasks = list(self.tasks.list_tasks(parent=handle))
            if not tasks:
                return Status("ended", 0 if ex.succeeded_count else None, "no task found")
            result = tasks[0].last_attempt_result
            started, ended = _when(ex.start_time), _when(ex.completion_time)
            if result.status.code and not result.exit_code:
                return Status("ended", None, result.status.message or "task failed without an exit code",
                              started_at=started, ended_at=ended)
            return Status("ended", int(result.exit_code), started_at=started, ended_at=ended)
        if ex.running_count:
            return Status("running")
        return Status("pending")

    def cancel(self, handle: str) -> None:
        try:
            with _translated(f"cancel execution {handle}"):
                self.executions.cancel_execution(name=handle)
        except NotFound:
            pass

    @property
    def logging(self) -> Any:
        """The Cloud Logging v2 client (``LoggingServiceV2Client``; injected in tests)."""
        if self._logging is None:
            from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client

            self._logging = LoggingServiceV2Client()
        return self._logging

    @staticmethod
    def log_filter(handle: str) -> str:
        """The Cloud Logging filter of one execution's entries (its job's, by execution name)."""
        parts = handle.split("/")
        terms = ['resource.type="cloud_run_job"']
        if len(parts) == 8 and parts[4] == "jobs" and parts[6] == "executions":
            terms += [f'resource.labels.location="{parts[3]}"', f'resource.labels.job_name="{parts[5]}"']
        terms.append(f'labels."run.googleapis.com/execution_name"="{parts[-1]}"')
        return " AND ".join(terms)

    def logs(self, handle: str, limit: int = 200) -> list[str]:
        """The last ``limit`` entries of the execution in Cloud Logging, oldest first."""
        from google.api_core import exceptions as gexc
        from google.api_core import retry as retries
        from google.cloud.logging_v2.types import ListLogEntriesRequest

        request = ListLogEntriesRequest(resource_names=[f"projects/{self.project}"], filter=self.log_filter(handle),
                                        order_by="timestamp desc", page_size=min(limit, 1000))
        # A person waits for this: transient errors are retried for logs_timeout seconds, not the default 60.
        retry = retries.Retry(predicate=retries.if_transient_error, timeout=self.logs_timeout)
        try:
            pages = self.logging.list_log_entries(request=request, retry=retry, timeout=self.logs_timeout)
            entries = list(itertools.islice(pages, limit))
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            raise InfraError(f"Cloud Logging: reading the entries of {handle} failed: {exc.message}") from exc
        return [_entry_line(e) for e in reversed(entries)]


def _entry_line(entry: Any) -> str:
    """``<timestamp> <text>``: the text payload, a JSON payload's ``message`` (else all of it)."""
    from google.protobuf import json_format

    pb = type(entry).pb(entry)
    kind = pb.WhichOneof("payload")
    if kind == "text_payload":
        text = pb.text_payload
    elif kind == "json_payload":
        payload = json_format.MessageToDict(pb.json_payload)
        text = str(payload.get("message", payload))
    elif kind == "proto_payload":
        text = str(json_format.MessageToDict(pb.proto_payload))
    else:
        text = ""
    at = pb.timestamp.ToDatetime(tzinfo=UTC).isoformat() if pb.HasField("timestamp") else ""
    return f"{at} {text}".strip()


def default_runner() -> str | None:
    """The deployment's default workflow identity: the first of FERRY_RUNNER_ACCOUNTS (deploy plan)."""
    import os

    accounts = [a.strip() for a in os.environ.get("FERRY_RUNNER_ACCOUNTS", "").split(",") if a.strip()]
    return accounts[0] if accounts else None


def _when(value: Any) -> datetime | None:
    """A proto Timestamp field as an aware datetime (None when unset)."""
    if not value:
        return None
    at = value if isinstance(value, datetime) else None
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
