"""A local fake of the Cloud Run Admin API v2 gRPC services (Jobs, Executions, Tasks, Operations),
built from the client library's own message types, so the Cloud Run launcher is tested through the
real generated clients over a real gRPC channel.

    fake = FakeRunV2(); addr = fake.start()
    jobs, executions, tasks = fake.clients()
    ... fake.finish(execution_name, exit_code=0)
    fake.stop()

It enforces what a real project and region would answer (docs/styx.md, "Cloud Run's limits", cites
the quotas page):

- at most ``job_limit`` jobs (1,000 per project and region): CreateJob beyond it is refused;
- at most ``running_limit`` running executions (1,000 per project and region): RunJob beyond it is
  refused;
- per-minute request quotas per region (None = unlimited): ``run_quota`` for RunJob ("Job run requests
  per minute per region"), ``write_quota`` for CreateJob/UpdateJob/DeleteJob/CancelExecution ("Write
  requests per minute per region"); the minute is the fake's ``clock``'s, so tests move time;
- job ids as the API takes them (``JOB_ID``): lowercase letters, digits and hyphens, starting with a
  letter, not ending with a hyphen, fewer than 50 characters.

A refusal for a quota or limit is gRPC ``RESOURCE_EXHAUSTED`` (HTTP 429) with the message format the
real service uses ("Quota exceeded for quota metric ... and limit ... of service 'run.googleapis.com'"),
and the request has no effect. ``refuse_runs(n)`` makes the next ``n`` RunJob requests fail that way
whatever the quota (a 429 storm). Deleting a job deletes its executions, as Cloud Run does.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.rpc import status_pb2

JOB_ID = re.compile(r"^[a-z](?:[a-z0-9-]{0,47}[a-z0-9])?$")
CompletionStatus = run_v2.ExecutionReference.CompletionStatus


def _any(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(type(message).pb(message))
    return packed


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def quota_message(metric: str, limit: str) -> str:
    """The text of a real Cloud Run quota refusal (as seen in googleapis/repo-automation-bots#4469)."""
    return (f"Quota exceeded for quota metric '{metric}' and limit '{limit}' of service 'run.googleapis.com' "
            "for consumer 'project_number:000000000000'.")


def _with_overrides(template: run_v2.TaskTemplate, overrides: run_v2.RunJobRequest.Overrides) -> run_v2.TaskTemplate:
    """The task template an execution records: its job's, with the run's overrides applied (args
    replaced, env merged by name, timeout replaced), as Cloud Run does."""
    out = run_v2.TaskTemplate(template)
    for override in overrides.container_overrides:
        container = out.containers[0]
        if override.args or override.clear_args:
            container.args = list(override.args)
        env = {e.name: e for e in container.env}
        env.update({e.name: e for e in override.env})
        container.env = list(env.values())
    if overrides.timeout.seconds:
        out.timeout = overrides.timeout
    return out


class FakeRunV2:
    def __init__(self, clock: Callable[[], float] = time.time, job_limit: int = 1000, running_limit: int = 1000,
                 run_quota: int | None = None, write_quota: int | None = None) -> None:
        self.clock = clock
        self.job_limit, self.running_limit = job_limit, running_limit
        self.run_quota, self.write_quota = run_quota, write_quota
        self.jobs: dict[str, run_v2.Job] = {}
        self.executions: dict[str, run_v2.Execution] = {}
        self.tasks: dict[str, run_v2.Task] = {}
        self.runs: list[run_v2.RunJobRequest] = []
        self.calls: list[str] = []
        self.refused: list[str] = []          # "<method>: <message>" of every request refused for a quota
        self.peak_jobs = 0                    # the most jobs the region held at any moment
        self.peak_running = 0                 # the most running executions at any moment
        self.created_jobs = 0
        self._of_job: dict[str, list[str]] = defaultdict(list)  # job -> its executions, oldest first
        self._window: dict[tuple[str, int], int] = defaultdict(int)  # (quota, minute) -> requests
        self._refuse_runs = 0
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._server: grpc.Server | None = None

    # -- limits ----------------------------------------------------------------------------------
    @property
    def running(self) -> int:
        return sum(1 for ex in self.executions.values() if not ex.completion_time)

    def refuse_runs(self, n: int) -> None:
        """The next ``n`` RunJob requests are refused with RESOURCE_EXHAUSTED (a 429 storm)."""
        with self._lock:
            self._refuse_runs = n

    def _refuse(self, ctx: grpc.ServicerContext, method: str, message: str) -> None:
        self.refused.append(f"{method}: {message}")
        ctx.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    def _rate(self, ctx: grpc.ServicerContext, method: str, kind: str) -> None:
        """Count one request against its per-minute quota; refuse it when the minute's is spent."""
        quota = self.run_quota if kind == "run" else self.write_quota
        metric = "Job run requests" if kind == "run" else "Write requests"
        minute = int(self.clock() // 60)
        if quota is not None and self._window[(kind, minute)] >= quota:
            self._refuse(ctx, method, quota_message(metric, f"{metric} per minute per region"))
        self._window[(kind, minute)] += 1

    # -- handlers --------------------------------------------------------------------------------
    def _op(self, response: Any = None, metadata: Any = None, done: bool = True) -> operations_pb2.Operation:
        op = operations_pb2.Operation(name=f"operations/op-{next(self._ids)}", done=done)
        if response is not None:
            op.response.CopyFrom(_any(response))
        if metadata is not None:
            op.metadata.CopyFrom(_any(metadata))
        return op

    def _etag(self, job: run_v2.Job) -> None:
        job.etag = f"e{next(self._ids)}"

    def create_job(self, req: run_v2.CreateJobRequest, ctx: grpc.ServicerContext) -> operations_pb2.Operation:
        with self._lock:
            self.calls.append("CreateJob")
            if not JOB_ID.match(req.job_id):
                ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, f"job id {req.job_id!r}: lowercase letters, digits and "
                          "hyphens, starting with a letter, not ending with a hyphen, fewer than 50 characters")
            name = f"{req.parent}/jobs/{req.job_id}"
            if name in self.jobs:
                ctx.abort(grpc.StatusCode.ALREADY_EXISTS, f"Resource '{req.job_id}' already exists.")
            self._rate(ctx, "CreateJob", "write")
            if len(self.jobs) >= self.job_limit:
                self._refuse(ctx, "CreateJob", quota_message("Jobs", "Jobs per project per region"))
            job = run_v2.Job(req.job)
            job.name, job.create_time, job.update_time = name, _ts(self.clock()), _ts(self.clock())
            self._etag(job)
            self.jobs[name] = job
            self.created_jobs += 1
            self.peak_jobs = max(self.peak_jobs, len(self.jobs))
            return self._op(response=job, metadata=job)

    def get_job(self, req: run_v2.GetJobRequest, ctx: grpc.ServicerContext) -> run_v2.Job:
        with self._lock:
            self.calls.append("GetJob")
            if req.name not in self.jobs:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"job {req.name} not found")
            return self.jobs[req.name]

    def list_jobs(self, req: run_v2.ListJobsRequest, ctx: grpc.ServicerContext) -> run_v2.ListJobsResponse:
        """The region's jobs by name, paged (``page_token`` is an offset)."""
        with self._lock:
            self.calls.append("ListJobs")
            mine = sorted((j for n, j in self.jobs.items() if n.startswith(req.parent + "/jobs/")),
                          key=lambda j: j.name)
        start, size = int(req.page_token or 0), req.page_size or 100
        token = str(start + size) if start + size < len(mine) else ""
        return run_v2.ListJobsResponse(jobs=mine[start:start + size], next_page_token=token)

    def update_job(self, req: run_v2.UpdateJobRequest, ctx: grpc.ServicerContext) -> operations_pb2.Operation:
        with self._lock:
            self.calls.append("UpdateJob")
            if req.job.name not in self.jobs:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"job {req.job.name} not found")
            self._rate(ctx, "UpdateJob", "write")
            old = self.jobs[req.job.name]
            job = run_v2.Job(req.job)
            job.create_time, job.update_time = old.create_time, _ts(self.clock())
            job.latest_created_execution, job.execution_count = old.latest_created_execution, old.execution_count
            self._etag(job)
            self.jobs[req.job.name] = job
            return self._op(response=job, metadata=job)

    def delete_job(self, req: run_v2.DeleteJobRequest, ctx: grpc.ServicerContext) -> operations_pb2.Operation:
        """Delete a job and its executions; with ``etag``, only if the job is still that version (a
        job run since has another)."""
        with self._lock:
            self.calls.append("DeleteJob")
            job = self.jobs.get(req.name)
            if job is None:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"job {req.name} not found")
            if req.etag and req.etag != job.etag:
                ctx.abort(grpc.StatusCode.ABORTED, f"job {req.name} was modified (etag {req.etag} is stale)")
            self._rate(ctx, "DeleteJob", "write")
            del self.jobs[req.name]
            for ex in self._of_job.pop(req.name, []):
                self.executions.pop(ex, None)
                self.tasks.pop(ex, None)
            return self._op(response=job, metadata=job)

    def run_job(self, req: run_v2.RunJobRequest, ctx: grpc.ServicerContext) -> operations_pb2.Operation:
        with self._lock:
            self.calls.append("RunJob")
            if req.name not in self.jobs:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"job {req.name} not found")
            if self._refuse_runs > 0:
                self._refuse_runs -= 1
                self._refuse(ctx, "RunJob", quota_message("Job run requests", "Job run requests per minute per region"))
            self._rate(ctx, "RunJob", "run")
            if self.running >= self.running_limit:
                self._refuse(ctx, "RunJob", quota_message("Running job executions",
                                                          "Running job executions per project per region"))
            self.runs.append(req)
            n = next(self._ids)
            job = self.jobs[req.name]
            job_short = req.name.rsplit("/", 1)[-1]
            name = f"{req.name}/executions/{job_short}-{n:05d}"
            now = _ts(self.clock())
            ex = run_v2.Execution(name=name, job=job_short, task_count=1, running_count=1, create_time=now, start_time=now,
                                  log_uri=f"https://console.cloud.google.com/logs/viewer?execution={n}",
                                  template=_with_overrides(job.template.template, req.overrides))
            self.executions[name] = ex
            self._of_job[req.name].append(name)
            self.tasks[name] = run_v2.Task(name=f"{name}/tasks/{job_short}-{n:05d}-task0", execution=name)
            job.execution_count += 1
            job.latest_created_execution = run_v2.ExecutionReference(
                name=name, create_time=now, completion_status=CompletionStatus.EXECUTION_RUNNING)
            self._etag(job)
            self.peak_running = max(self.peak_running, self.running)
            return self._op(metadata=ex, done=False)  # the LRO runs as long as the execution

    def get_execution(self, req: run_v2.GetExecutionRequest, ctx: grpc.ServicerContext) -> run_v2.Execution:
        with self._lock:
            self.calls.append("GetExecution")
            if req.name not in self.executions:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"execution {req.name} not found")
            return self.executions[req.name]

    def list_executions(self, req: run_v2.ListExecutionsRequest,
                        ctx: grpc.ServicerContext) -> run_v2.ListExecutionsResponse:
        """A job's executions, newest first, paged (``page_token`` is an offset, as opaque to clients as
        the real one)."""
        with self._lock:
            self.calls.append("ListExecutions")
            if req.parent not in self.jobs:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"job {req.parent} not found")
            mine = [self.executions[n] for n in reversed(self._of_job.get(req.parent, []))]
        start = int(req.page_token or 0)
        size = req.page_size or 100
        page = mine[start:start + size]
        token = str(start + size) if start + size < len(mine) else ""
        return run_v2.ListExecutionsResponse(executions=page, next_page_token=token)

    def cancel_execution(self, req: run_v2.CancelExecutionRequest,
                         ctx: grpc.ServicerContext) -> operations_pb2.Operation:
        with self._lock:
            self.calls.append("CancelExecution")
            if req.name not in self.executions:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"execution {req.name} not found")
            self._rate(ctx, "CancelExecution", "write")
            ex = self.executions[req.name]
            if not ex.completion_time:
                ex.running_count, ex.cancelled_count = 0, 1
                self._completed(ex, CompletionStatus.EXECUTION_CANCELLED)
            return self._op(response=ex, metadata=ex)

    def list_tasks(self, req: run_v2.ListTasksRequest, ctx: grpc.ServicerContext) -> run_v2.ListTasksResponse:
        with self._lock:
            self.calls.append("ListTasks")
            task = self.tasks.get(req.parent)
            return run_v2.ListTasksResponse(tasks=[task] if task else [])

    def get_operation(self, req: operations_pb2.GetOperationRequest, ctx: grpc.ServicerContext) -> Any:
        return operations_pb2.Operation(name=req.name, done=True, response=_any(empty_pb2.Empty()))

    def _completed(self, ex: run_v2.Execution, status: Any) -> None:
        ex.completion_time = _ts(self.clock())
        job = self.jobs.get(f"{ex.name.split('/executions/')[0]}")
        if job is not None and job.latest_created_execution.name == ex.name:
            job.latest_created_execution.completion_time = ex.completion_time
            job.latest_created_execution.completion_status = status

    # -- test controls ---------------------------------------------------------------------------
    def finish(self, execution: str, exit_code: int) -> None:
        with self._lock:
            ex = self.executions[execution]
            ex.running_count = 0
            if exit_code == 0:
                ex.succeeded_count = 1
            else:
                ex.failed_count = 1
            self._completed(ex, CompletionStatus.EXECUTION_SUCCEEDED if exit_code == 0
                            else CompletionStatus.EXECUTION_FAILED)
            self.tasks[execution].last_attempt_result = run_v2.TaskAttemptResult(
                exit_code=exit_code, status=status_pb2.Status(code=0 if exit_code == 0 else 2))

    def finish_older_than(self, seconds: float, exit_code: int = 0) -> int:
        """The platform runs: every execution created at least ``seconds`` ago (by the fake's clock)
        that is still running ends with ``exit_code``. Returns how many ended."""
        with self._lock:
            cutoff = self.clock() - seconds
            due = [n for n, ex in self.executions.items()
                   if not ex.completion_time and ex.create_time.timestamp() <= cutoff]
            for n in due:
                self.finish(n, exit_code)
            return len(due)

    def count(self, method: str) -> int:
        with self._lock:
            return self.calls.count(method)

    # -- server ---------------------------------------------------------------------------------
    def start(self) -> str:
        def unary(fn: Any, req_type: Any, resp_serializer: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=req_type.deserialize,
                                                       response_serializer=resp_serializer)
        op_ser = operations_pb2.Operation.SerializeToString
        server = grpc.server(futures.ThreadPoolExecutor(16))
        server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler("google.cloud.run.v2.Jobs", {
                "CreateJob": unary(self.create_job, run_v2.CreateJobRequest, op_ser),
                "GetJob": unary(self.get_job, run_v2.GetJobRequest, run_v2.Job.serialize),
                "ListJobs": unary(self.list_jobs, run_v2.ListJobsRequest, run_v2.ListJobsResponse.serialize),
                "UpdateJob": unary(self.update_job, run_v2.UpdateJobRequest, op_ser),
                "DeleteJob": unary(self.delete_job, run_v2.DeleteJobRequest, op_ser),
                "RunJob": unary(self.run_job, run_v2.RunJobRequest, op_ser),
            }),
            grpc.method_handlers_generic_handler("google.cloud.run.v2.Executions", {
                "GetExecution": unary(self.get_execution, run_v2.GetExecutionRequest, run_v2.Execution.serialize),
                "ListExecutions": unary(self.list_executions, run_v2.ListExecutionsRequest,
                                        run_v2.ListExecutionsResponse.serialize),
                "CancelExecution": unary(self.cancel_execution, run_v2.CancelExecutionRequest, op_ser),
            }),
            grpc.method_handlers_generic_handler("google.cloud.run.v2.Tasks", {
                "ListTasks": unary(self.list_tasks, run_v2.ListTasksRequest, run_v2.ListTasksResponse.serialize),
            }),
            grpc.method_handlers_generic_handler("google.longrunning.Operations", {
                "GetOperation": grpc.unary_unary_rpc_method_handler(
                    self.get_operation, request_deserializer=operations_pb2.GetOperationRequest.FromString,
                    response_serializer=op_ser),
            }),
        ])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self.address

    def clients(self) -> tuple[Any, Any, Any]:
        return clients_for(self.address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)


def clients_for(address: str) -> tuple[Any, Any, Any]:
    """The real run_v2 Jobs, Executions and Tasks clients, talking to the fake at ``address`` (from
    any process)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.run_v2.services.executions.transports import ExecutionsGrpcTransport
    from google.cloud.run_v2.services.jobs.transports import JobsGrpcTransport
    from google.cloud.run_v2.services.tasks.transports import TasksGrpcTransport

    creds = AnonymousCredentials()
    return (run_v2.JobsClient(transport=JobsGrpcTransport(channel=grpc.insecure_channel(address), credentials=creds)),
            run_v2.ExecutionsClient(transport=ExecutionsGrpcTransport(channel=grpc.insecure_channel(address),
                                                                      credentials=creds)),
            run_v2.TasksClient(transport=TasksGrpcTransport(channel=grpc.insecure_channel(address), credentials=creds)))
