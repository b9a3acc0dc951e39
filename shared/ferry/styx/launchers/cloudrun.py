"""The Cloud Run jobs launcher: one Cloud Run job per workflow, one execution per instance attempt.

``launch`` ensures the job (created from the workflow's image, command, cpu, memory and service
account; updated when those change), then runs it with per-execution overrides of args, env and
timeout (``FERRY_EXECUTION_ID`` in its env names the execution: ``find`` looks for it among the job's
executions). ``poll`` reads the execution and its task's exit code; ``cancel`` cancels the execution;
``logs`` reads the execution's entries from Cloud Logging. The clients are injectable (tests run
against a local fake of the Run v2 gRPC services); nothing connects until first use.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
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


def _env(spec: LaunchSpec) -> dict[str, str]:
    return {**spec.env, EXECUTION_ENV: spec.execution_id}


def _execution_id(execution: Any) -> str | None:
    for container in execution.template.containers:
        for var in container.env:
            if var.name == EXECUTION_ENV:
                return str(var.value)
    return None


def job_id(workflow: str) -> str:
    """A valid Cloud Run job id for a workflow: lowercase letters, digits, hyphens, <= 49 chars."""
    slug = re.sub(r"[^a-z0-9-]+", "-", workflow.lower()).strip("-")
    return f"styx-{slug}"[:49].rstrip("-")


class CloudRunLauncher:
    def __init__(self, project: str, region: str, jobs: Any = None, executions: Any = None, tasks: Any = None,
                 logging_client: Any = None) -> None:
        self.project = project
        self.region = region
        self._jobs, self._executions, self._tasks, self._logging = jobs, executions, tasks, logging_client
        self._ensured: dict[str, tuple[Any, ...]] = {}
        self.logs_timeout = 15.0
        self._lock = threading.Lock()

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

    def job_name(self, workflow: str) -> str:
        return f"{self.parent}/jobs/{job_id(workflow)}"

    def _job(self, spec: LaunchSpec) -> Any:
        from google.cloud import run_v2
        from google.protobuf import duration_pb2

        container = run_v2.Container(image=spec.image, command=list(spec.command),
                                     resources=run_v2.ResourceRequirements(
                                         limits={"cpu": spec.cpu, "memory": spec.memory}))
        task = run_v2.TaskTemplate(containers=[container], max_retries=0,  # Styx owns retries
                                   timeout=duration_pb2.Duration(seconds=int(spec.timeout.total_seconds())))
        # Without its own, a workflow runs as the deployment's default runner (never the compute default).
        account = spec.service_account or default_runner()
        if account:
            task.service_account = account
        return run_v2.Job(labels=dict(spec.labels), template=run_v2.ExecutionTemplate(task_count=1, template=task))

    @staticmethod
    def _shape(job: Any) -> tuple[Any, ...]:
        c = job.template.template.containers[0] if job.template.template.containers else None
        return (c.image if c else None, tuple(c.command) if c else (), dict(c.resources.limits) if c else {},
                job.template.template.service_account or None, job.template.template.timeout.seconds)

    def ensure_job(self, spec: LaunchSpec) -> str:
        """Create or update the workflow's job so it matches ``spec`` (cached per process)."""
        name = self.job_name(spec.workflow)
        wanted = self._job(spec)
        shape = self._shape(wanted)
        with self._lock:
            if self._ensured.get(name) == shape:
                return name
        from google.api_core import exceptions as gexc

        with _translated(f"ensure job {name}"):
            try:
                current = self.jobs.get_job(name=name)
            except gexc.NotFound:
                self.jobs.create_job(parent=self.parent, job=wanted, job_id=job_id(spec.workflow)).result()
            else:
                if self._shape(current) != shape:
                    wanted.name = name
                    self.jobs.update_job(job=wanted).result()
        with self._lock:
            self._ensured[name] = shape
        return name

    def launch(self, spec: LaunchSpec) -> Launched:
        from google.cloud import run_v2
        from google.protobuf import duration_pb2

        name = self.ensure_job(spec)
        overrides = run_v2.RunJobRequest.Overrides(
            container_overrides=[run_v2.RunJobRequest.Overrides.ContainerOverride(
                args=list(spec.args), env=[run_v2.EnvVar(name=k, value=v) for k, v in _env(spec).items()],
                clear_args=not spec.args)],
            task_count=1, timeout=duration_pb2.Duration(seconds=int(spec.timeout.total_seconds())))
        with _translated(f"run job {name}"):
            op = self.jobs.run_job(request=run_v2.RunJobRequest(name=name, overrides=overrides))
            execution = op.metadata  # the Execution, known at once; the LRO ends when it completes
        if execution is None or not execution.name:
            raise InfraError(f"Cloud Run did not name the execution of {name}")
        return Launched(handle=execution.name, log_uri=execution.log_uri or None)

    def find(self, workflow: str, execution_id: str) -> Launched | None:
        """The job's execution whose env has ``FERRY_EXECUTION_ID=execution_id`` (an execution records
        its run's overrides in its template), among the newest ``FIND_SCAN``; None if there is none."""
        from google.cloud import run_v2

        name = self.job_name(workflow)
        try:
            with _translated(f"list executions of {name}"):
                pages = self.executions.list_executions(
                    request=run_v2.ListExecutionsRequest(parent=name, page_size=100))
                for ex in itertools.islice(pages, FIND_SCAN):
                    if _execution_id(ex) == execution_id:
                        return Launched(handle=ex.name, log_uri=ex.log_uri or None)
        except NotFound:
            return None  # no job yet: nothing of it was launched
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
            if result.status.code and not result.exit_code:
                return Status("ended", None, result.status.message or "task failed without an exit code")
            return Status("ended", int(result.exit_code))
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
