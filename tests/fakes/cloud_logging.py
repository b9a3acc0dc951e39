"""A local fake of the Cloud Logging v2 gRPC service (``google.logging.v2.LoggingServiceV2``,
``ListLogEntries``), built from the client library's own message types, so log reading is tested
through the real generated client over a real gRPC channel.

    fake = FakeLogging(); fake.start()
    fake.add("run.googleapis.com/execution_name", "agg-x7k2p", "hello")  # one entry
    client = fake.client()
    ... fake.requests (every ListLogEntriesRequest received)
    fake.stop()

The fake understands the one filter shape Ferry sends (equality terms joined by AND on
``resource.type``, ``resource.labels.K`` and ``labels."K"``), ``order_by`` ``timestamp asc|desc``, and
pages (``page_size``, ``page_token``).
"""

from __future__ import annotations

import re
import threading
from concurrent import futures
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.api import monitored_resource_pb2
from google.cloud.logging_v2.types import ListLogEntriesRequest, ListLogEntriesResponse, LogEntry
from google.protobuf import struct_pb2

_TERM = re.compile(r'^(resource\.type|resource\.labels\.[\w.-]+|labels\."[^"]+"|labels\.[\w.-]+)\s*=\s*"([^"]*)"$')


def _matches(entry: LogEntry, flt: str) -> bool:
    pb = LogEntry.pb(entry)
    for term in filter(None, (t.strip() for t in flt.split(" AND "))):
        m = _TERM.match(term)
        if m is None:
            raise ValueError(f"the fake does not understand the filter term {term!r}")
        key, value = m.groups()
        if key == "resource.type":
            have = pb.resource.type
        elif key.startswith("resource.labels."):
            have = pb.resource.labels.get(key[len("resource.labels."):], None)
        else:
            have = pb.labels.get(key[len("labels."):].strip('"'), None)
        if have != value:
            return False
    return True


class FakeLogging:
    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.requests: list[ListLogEntriesRequest] = []
        self.fail_with: grpc.StatusCode | None = None  # answer every call with this error
        self._t0 = datetime(2026, 11, 26, 12, tzinfo=UTC)
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.address = ""

    def add(self, execution: str, text: str | None = None, json: dict[str, Any] | None = None,
            job: str = "styx-agg", resource_type: str = "cloud_run_job") -> LogEntry:
        """One entry written by ``execution`` of Cloud Run job ``job`` (a second after the previous)."""
        with self._lock:
            at = self._t0 + timedelta(seconds=len(self.entries))
            entry = LogEntry(log_name="projects/proj/logs/run.googleapis.com%2Fstdout", timestamp=at,
                             labels={"run.googleapis.com/execution_name": execution,
                                     "run.googleapis.com/task_index": "0"})
            pb = LogEntry.pb(entry)
            pb.resource.CopyFrom(monitored_resource_pb2.MonitoredResource(
                type=resource_type, labels={"job_name": job, "location": "europe-west1", "project_id": "proj"}))
            if json is not None:
                s = struct_pb2.Struct()
                s.update(json)
                pb.json_payload.CopyFrom(s)
            else:
                pb.text_payload = text or ""
            self.entries.append(entry)
            return entry

    def list_log_entries(self, req: ListLogEntriesRequest, ctx: grpc.ServicerContext) -> ListLogEntriesResponse:
        with self._lock:
            self.requests.append(req)
            entries = list(self.entries)
        if self.fail_with is not None:
            ctx.abort(self.fail_with, f"fake: {self.fail_with.name}")
        try:
            found = [e for e in entries if _matches(e, req.filter)]
        except ValueError as exc:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        found.sort(key=lambda e: LogEntry.pb(e).timestamp.ToNanoseconds(),
                   reverse=req.order_by.strip().lower().endswith("desc"))
        start = int(req.page_token or 0)
        size = req.page_size or 1000
        page = found[start:start + size]
        more = start + size < len(found)
        return ListLogEntriesResponse(entries=page, next_page_token=str(start + size) if more else "")

    def start(self) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(2))
        server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler("google.logging.v2.LoggingServiceV2", {
                "ListLogEntries": grpc.unary_unary_rpc_method_handler(
                    self.list_log_entries, request_deserializer=ListLogEntriesRequest.deserialize,
                    response_serializer=ListLogEntriesResponse.serialize),
            }),
        ])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self.address

    def client(self) -> Any:
        """The library's own client, on an insecure channel to this fake, with anonymous credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
        from google.cloud.logging_v2.services.logging_service_v2.transports import (
            LoggingServiceV2GrpcTransport,
        )

        transport = LoggingServiceV2GrpcTransport(channel=grpc.insecure_channel(self.address),
                                                  credentials=AnonymousCredentials())
        return LoggingServiceV2Client(transport=transport)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
