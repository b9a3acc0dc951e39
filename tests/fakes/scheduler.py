"""A local fake of the Cloud Scheduler gRPC service, built from the library's own message types.

It speaks the real wire protocol (``google.cloud.scheduler.v1.CloudScheduler``), so the real
``CloudSchedulerClient`` talks to it unchanged; jobs live in memory. Behaviour follows the service:
NOT_FOUND / ALREADY_EXISTS, ``update_mask`` honoured, a stored job gains ``state`` and the
``User-Agent`` header Cloud Scheduler adds to HTTP targets.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports.grpc import CloudSchedulerGrpcTransport
from google.protobuf import empty_pb2

SERVICE = "google.cloud.scheduler.v1.CloudScheduler"


class FakeCloudScheduler:
    def __init__(self) -> None:
        self.jobs: dict[str, scheduler_v1.Job] = {}
        self.calls: list[str] = []
        self._lock = threading.Lock()

    # -- RPCs ----------------------------------------------------------------------------------
    def get_job(self, request: scheduler_v1.GetJobRequest, context: grpc.ServicerContext) -> scheduler_v1.Job:
        self.calls.append("GetJob")
        with self._lock:
            job = self.jobs.get(request.name)
        if job is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Job not found: {request.name}")
        return scheduler_v1.Job(job)

    def list_jobs(self, request: scheduler_v1.ListJobsRequest,
                  context: grpc.ServicerContext) -> scheduler_v1.ListJobsResponse:
        self.calls.append("ListJobs")
        with self._lock:
            jobs = [j for n, j in sorted(self.jobs.items()) if n.startswith(request.parent + "/jobs/")]
        return scheduler_v1.ListJobsResponse(jobs=jobs)

    def create_job(self, request: scheduler_v1.CreateJobRequest, context: grpc.ServicerContext) -> scheduler_v1.Job:
        self.calls.append("CreateJob")
        job = scheduler_v1.Job(request.job)
        if not job.name.startswith(request.parent + "/jobs/"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"job name {job.name} is not under {request.parent}")
        self._validate(job, context)
        with self._lock:
            if job.name in self.jobs:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"Job {job.name} already exists")
            self.jobs[job.name] = self._stored(job)
            return scheduler_v1.Job(self.jobs[job.name])

    def update_job(self, request: scheduler_v1.UpdateJobRequest, context: grpc.ServicerContext) -> scheduler_v1.Job:
        self.calls.append("UpdateJob")
        with self._lock:
            current = self.jobs.get(request.job.name)
            if current is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Job not found: {request.job.name}")
            updated = scheduler_v1.Job(current)
            paths = list(request.update_mask.paths) or [f for f in scheduler_v1.Job.meta.fields if f != "name"]
            for path in paths:
                if path not in scheduler_v1.Job.meta.fields:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown field in update_mask: {path}")
                setattr(updated, path, getattr(request.job, path))
            self._validate(updated, context)
            self.jobs[updated.name] = self._stored(updated)
            return scheduler_v1.Job(self.jobs[updated.name])

    def delete_job(self, request: scheduler_v1.DeleteJobRequest, context: grpc.ServicerContext) -> Any:
        self.calls.append("DeleteJob")
        with self._lock:
            if self.jobs.pop(request.name, None) is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Job not found: {request.name}")
        return empty_pb2.Empty()

    # -- behaviour of the real service ---------------------------------------------------------
    @staticmethod
    def _validate(job: scheduler_v1.Job, context: grpc.ServicerContext) -> None:
        if not job.schedule:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Schedule is required")
        if job.http_target.oidc_token.service_account_email and job.http_target.oauth_token.service_account_email:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only one of oidc_token and oauth_token")

    @staticmethod
    def _stored(job: scheduler_v1.Job) -> scheduler_v1.Job:
        stored = scheduler_v1.Job(job)
        stored.state = scheduler_v1.Job.State.ENABLED
        if stored.http_target.uri:
            stored.http_target.headers["User-Agent"] = "Google-Cloud-Scheduler"
        return stored

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(fn: Any, request_type: Any, response_serializer: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=request_type.deserialize,
                                                       response_serializer=response_serializer)

        return grpc.method_handlers_generic_handler(SERVICE, {
            "GetJob": unary(self.get_job, scheduler_v1.GetJobRequest, scheduler_v1.Job.serialize),
            "ListJobs": unary(self.list_jobs, scheduler_v1.ListJobsRequest, scheduler_v1.ListJobsResponse.serialize),
            "CreateJob": unary(self.create_job, scheduler_v1.CreateJobRequest, scheduler_v1.Job.serialize),
            "UpdateJob": unary(self.update_job, scheduler_v1.UpdateJobRequest, scheduler_v1.Job.serialize),
            "DeleteJob": unary(self.delete_job, scheduler_v1.DeleteJobRequest,
                               empty_pb2.Empty.SerializeToString),
        })


@contextmanager
def serve() -> Iterator[tuple[FakeCloudScheduler, scheduler_v1.CloudSchedulerClient]]:
    """Start the fake on a free local port; yield it and a real client connected to it."""
    fake = FakeCloudScheduler()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((fake.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        client = scheduler_v1.CloudSchedulerClient(transport=CloudSchedulerGrpcTransport(channel=channel))
        yield fake, client
    finally:
        channel.close()
        server.stop(grace=None)
