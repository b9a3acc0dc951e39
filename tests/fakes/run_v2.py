"""A local fake of the Cloud Run Admin API v2 gRPC services (Jobs, Executions, Tasks, Operations),
built from the client library's own message types, so the Cloud Run launcher is tested through the
real generated clients over a real gRPC channel.

    fake = FakeRunV2(); addr = fake.start()
    jobs, executions, tasks = fake.clients()
    ... fake.finish(execution_name, exit_code=0)
    fake.stop()
"""

from __future__ import annotations

import itertools
import threading
from concurrent import futures
from typing import Any

import grpc
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import status_pb2


def _any(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(type(message).pb(message))
    return packed


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


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
    def __init__(self) -> None:
        self.jobs: dict[str, run_v2.Job] = {}
        self.executions: dict[str, run_v2.Execution] = {}
        self.tasks: dict[str, run_v2.Task] = {}
        self.runs: list[run_v2.RunJobRequest] = []
        self.calls: list[str] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    # -- handlers --------------------------------------------------------------------------------
    def _op(self, response: Any = None, metadata: Any = None, done: bool = True) -> operations_pb2.Operation:
        op = operations_pb2.Operation(name=f"operations/op-{next(self._ids)}", done=done)
        if response is not None:
            op.response.CopyFrom(_any(response))
        if metadata is not None:
            op.metadata.CopyFrom(_any(metadata))
        return op

    def create_job(self, req: run_v2.CreateJobRequest, ctx: grpc.ServicerContext) -> operations_pb2.Operation:
        self.calls.append("CreateJob")
        name = f"{req.parent}/jobs/{req.job_id}"
        with self._lock:
            if name in self.jobs:
                ctx.abort(grpc.StatusCode.ALREADY_EXISTS, f"job {name} exists")
            job = run_v2.Job(req.job)
            job.name = name
            self.jobs[name] = job
        return self._op(response=job, metadata=job)

    def get_job(self, req: run_v2.GetJobRequest, ctx: grpc.ServicerContext) -> run_v2.Job:
        self.calls.append("GetJob")
        if req.name not in self.jobs:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"job {req.name} not found")
        return self.jobs[req.name]

    def update_job(self, req: run_v2.UpdateJobRequest, ctx: grpc.ServicerContext) -> operations_pb2.Operation:
        self.calls.append("UpdateJob")
        if req.job.name not in self.jobs:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"job {req.job.name} not found")
        self.jobs[req.job.name] = run_v2.Job(req.job)
        return self._op(response=req.job, metadata=req.job)

    def run_job(self, req: run_v2.RunJobRequest, ctx: grpc.ServicerContext) -> operations_pb2.Operation:
        self.calls.append("RunJob")
        if req.name not in self.jobs:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"job {req.name} not found")
        with self._lock:
            self.runs.append(req)
            n = next(self._ids)
            job_short = req.name.rsplit("/", 1)[-1]
            name = f"{req.name.rsplit('/jobs/', 1)[0]}/jobs/{job_short}/executions/{job_short}-{n:05d}"
            ex = run_v2.Execution(name=name, job=job_short, task_count=1, running_count=1, create_time=_now(),
                                  log_uri=f"https://console.cloud.google.com/logs/viewer?execution={n}",
                                  template=_with_overrides(self.jobs[req.name].template.template, req.overrides))
            self.executions[name] = ex
            self.tasks[name] = run_v2.Task(name=f"{name}/tasks/{job_short}-{n:05d}-task0", execution=name)
        return self._op(metadata=ex, done=False)  # the LRO runs as long as the execution

    def get_execution(self, req: run_v2.GetExecutionRequest, ctx: grpc.ServicerContext) -> run_v2.Execution:
        self.calls.append("GetExecution")
        if req.name not in self.executions:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"execution {req.name} not found")
        return self.executions[req.name]

    def list_executions(self, req: run_v2.ListExecutionsRequest,
                        ctx: grpc.ServicerContext) -> run_v2.ListExecutionsResponse:
        """A job's executions, newest first, paged (``page_token`` is an offset, as opaque to clients as
        the real one)."""
        self.calls.append("ListExecutions")
        if req.parent not in self.jobs:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"job {req.parent} not found")
        with self._lock:
            mine = [ex for name, ex in self.executions.items() if name.startswith(req.parent + "/executions/")]
        mine.reverse()  # insertion order is creation order
        start = int(req.page_token or 0)
        size = req.page_size or 100
        page = mine[start:start + size]
        token = str(start + size) if start + size < len(mine) else ""
        return run_v2.ListExecutionsResponse(executions=page, next_page_token=token)

    def cancel_execution(self, req: run_v2.CancelExecutionRequest,
                         ctx: grpc.ServicerContext) -> operations_pb2.Operation:
        self.calls.append("CancelExecution")
        if req.name not in self.executions:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"execution {req.name} not found")
        ex = self.executions[req.name]
        ex.running_count, ex.cancelled_count = 0, 1
        ex.completion_time = _now()
        return self._op(response=ex, metadata=ex)

    def list_tasks(self, req: run_v2.ListTasksRequest, ctx: grpc.ServicerContext) -> run_v2.ListTasksResponse:
        self.calls.append("ListTasks")
        task = self.tasks.get(req.parent)
        return run_v2.ListTasksResponse(tasks=[task] if task else [])

    def get_operation(self, req: operations_pb2.GetOperationRequest, ctx: grpc.ServicerContext) -> Any:
        return operations_pb2.Operation(name=req.name, done=True)

    # -- test controls ---------------------------------------------------------------------------
    def finish(self, execution: str, exit_code: int) -> None:
        ex = self.executions[execution]
        ex.running_count = 0
        if exit_code == 0:
            ex.succeeded_count = 1
        else:
            ex.failed_count = 1
        ex.completion_time = _now()
        self.tasks[execution].last_attempt_result = run_v2.TaskAttemptResult(
            exit_code=exit_code, status=status_pb2.Status(code=0 if exit_code == 0 else 2))

    # -- server ---------------------------------------------------------------------------------
    def start(self) -> str:
        def unary(fn: Any, req_type: Any, resp_serializer: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=req_type.deserialize,
                                                       response_serializer=resp_serializer)
        op_ser = operations_pb2.Operation.SerializeToString
        server = grpc.server(futures.ThreadPoolExecutor(4))
        server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler("google.cloud.run.v2.Jobs", {
                "CreateJob": unary(self.create_job, run_v2.CreateJobRequest, op_ser),
                "GetJob": unary(self.get_job, run_v2.GetJobRequest, run_v2.Job.serialize),
                "UpdateJob": unary(self.update_job, run_v2.UpdateJobRequest, op_ser),
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
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.run_v2.services.executions.transports import ExecutionsGrpcTransport
        from google.cloud.run_v2.services.jobs.transports import JobsGrpcTransport
        from google.cloud.run_v2.services.tasks.transports import TasksGrpcTransport

        def channel() -> grpc.Channel:
            return grpc.insecure_channel(self.address)
        creds = AnonymousCredentials()
        return (run_v2.JobsClient(transport=JobsGrpcTransport(channel=channel(), credentials=creds)),
                run_v2.ExecutionsClient(transport=ExecutionsGrpcTransport(channel=channel(), credentials=creds)),
                run_v2.TasksClient(transport=TasksGrpcTransport(channel=channel(), credentials=creds)))

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
