"""A local fake of Cloud Monitoring's ``google.monitoring.v3.MetricService`` / ``ListTimeSeries``.

It speaks the real gRPC wire protocol with the library's own message types, so the real
``monitoring_v3.MetricServiceClient`` talks to it unchanged. Points live in memory per
(metric type, subscription_id); ``ListTimeSeries`` honours the filter the way the service does for
the clauses Gabo sends (``metric.type``, ``resource.type``, ``resource.labels.subscription_id``, joined by
AND; anything else is INVALID_ARGUMENT) and the interval (points whose end time lies in
``(start_time, end_time]``), newest point first, one series per subscription. Every request is kept.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from datetime import datetime

import grpc
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports.grpc import MetricServiceGrpcTransport

SERVICE = "google.monitoring.v3.MetricService"
CLAUSE = re.compile(r'^\s*(metric\.type|resource\.type|resource\.labels\.subscription_id)\s*=\s*"([^"]*)"\s*$')


class FakeMetricService:
    def __init__(self) -> None:
        self.points: dict[tuple[str, str], list[tuple[datetime, int]]] = {}
        self.requests: list[monitoring_v3.ListTimeSeriesRequest] = []
        self.deny = False  # answer PERMISSION_DENIED (a service account without monitoring.viewer)
        self._lock = threading.Lock()

    def add(self, metric_type: str, subscription: str, at: datetime, value: int) -> None:
        with self._lock:
            self.points.setdefault((metric_type, subscription), []).append((at, value))

    def list_time_series(self, request: monitoring_v3.ListTimeSeriesRequest,
                         context: grpc.ServicerContext) -> monitoring_v3.ListTimeSeriesResponse:
        self.requests.append(request)
        if self.deny:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "Permission monitoring.timeSeries.list denied")
        if not re.fullmatch(r"projects/[a-z][-a-z0-9]*", request.name):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad name {request.name!r}")
        where: dict[str, str] = {}
        for clause in request.filter.split(" AND "):
            m = CLAUSE.match(clause)
            if m is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported filter clause {clause!r}")
            where[m.group(1)] = m.group(2)
        if "metric.type" not in where:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the filter must name a metric.type")
        if "end_time" not in request.interval:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "interval.end_time is required")
        start, end = request.interval.start_time, request.interval.end_time
        series = []
        with self._lock:
            items = sorted(self.points.items())
        for (metric, sub), pts in items:
            if metric != where["metric.type"] or where.get("resource.type", "pubsub_subscription") != "pubsub_subscription":
                continue
            if "resource.labels.subscription_id" in where and sub != where["resource.labels.subscription_id"]:
                continue
            inside = sorted((p for p in pts if start < p[0] <= end), key=lambda p: p[0], reverse=True)
            if not inside:
                continue
            series.append(monitoring_v3.TimeSeries(
                metric={"type": metric}, resource={"type": "pubsub_subscription",
                                                   "labels": {"subscription_id": sub, "project_id": "p"}},
                metric_kind="GAUGE", value_type="INT64",
                points=[monitoring_v3.Point(interval=monitoring_v3.TimeInterval(end_time=at),
                                            value=monitoring_v3.TypedValue(int64_value=v)) for at, v in inside]))
        return monitoring_v3.ListTimeSeriesResponse(time_series=series)


@contextmanager
def serve() -> Iterator[tuple[FakeMetricService, monitoring_v3.MetricServiceClient]]:
    """Run the fake on a free local port; yield it and a real client connected to it."""
    fake = FakeMetricService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
            fake.list_time_series, request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
            response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        client = monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
        yield fake, client
    finally:
        channel.close()
        server.stop(None)
