"""Where the scaler and the closer learn a delivery subscription's backlog: the ``BacklogSource`` port.

Two adapters, chosen in one place (:func:`open_backlog`, from ``FERRY_BACKLOG``):

- ``PullStatsBacklog`` (``pull``, the default; the local stack — the emulator has no metrics): the
  workers' own pull statistics in ``gabo_runs`` (drained, saturated, the oldest event a live worker
  holds and its lease);
- ``CloudMonitoringBacklog`` (``monitoring``; the cloud, ``cloud_env`` in infra/core.yaml): Cloud
  Monitoring's ``pubsub.googleapis.com/subscription/num_undelivered_messages`` and
  ``.../oldest_unacked_message_age`` of ``gabo-<type>-delivery``, the latest point of the last minutes.

Each answers ``backlog`` (scaler inputs) and ``watermark`` (the closer's "every event received before
W is written"); see docs/gabo.md, "When may a period close?".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ferry import log
from ferry.errors import InfraError
from ferry.gabo.closing.decide import metric_watermark, watermark
from ferry.gabo.envelopes import iso
from ferry.gabo.names import PRIMARY, Names
from ferry.gabo.state import GaboState

if TYPE_CHECKING:
    from google.cloud import monitoring_v3

logger = log.get("gabo.backlog")

# Drains newer than this are not trusted yet: a worker that pulled just before a drain writes its
# holding a few milliseconds after its pull returns.
SETTLE = timedelta(seconds=5)
RUN_HORIZON = timedelta(days=1)
SCALE_HORIZON = timedelta(minutes=15)

UNDELIVERED = "pubsub.googleapis.com/subscription/num_undelivered_messages"
OLDEST_AGE = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
# Pub/Sub writes these points every 60 s and they show up to ~4 minutes late: a window of 5 minutes
# finds the latest one; an older point is no evidence of now.
WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class Backlog:
    """One reading of a delivery subscription's backlog (None = this source does not know)."""

    source: str
    messages: int | None = None          # undelivered (available or leased, not acked) messages
    oldest_age_s: float | None = None    # age of the oldest unacked message at ``sampled_at``
    sampled_at: datetime | None = None   # when the reading was true (a metric point's end time)
    drained: bool = False                # evidence the subscription was empty
    saturated: bool = False              # workers ended their budget still pulling full batches

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "messages": self.messages, "oldest_age_s": self.oldest_age_s,
                "sampled_at": iso(self.sampled_at) if self.sampled_at else None,
                "drained": self.drained, "saturated": self.saturated}


class BacklogSource(Protocol):
    kind: str

    def backlog(self, event_type: str, now: datetime, current: int = 1) -> Backlog:
        """The backlog of ``event_type``'s delivery subscription as known at ``now`` (``current``: the
        number of parallel workers last decided — whose latest runs tell of the backlog)."""
        ...

    def watermark(self, event_type: str, now: datetime) -> datetime | None:
        """An instant W such that every event received before W is written (acked), or None if unknown."""
        ...

    def for_stream(self, stream: str) -> BacklogSource:
        """The same source, reading the delivery of ``stream`` (``DARKLOAD``: the shadow's)."""
        ...


class PullStatsBacklog:
    """From the workers' own reports in ``gabo_runs`` (the emulator has no metrics)."""

    kind = "pull"

    def __init__(self, state: GaboState) -> None:
        self.state = state

    def for_stream(self, stream: str) -> PullStatsBacklog:
        return PullStatsBacklog(GaboState(self.state.store, stream))

    def backlog(self, event_type: str, now: datetime, current: int = 1) -> Backlog:
        runs = [r for r in self.state.recent_runs(event_type, now - SCALE_HORIZON) if r.get("finished_at")]
        latest = sorted(runs, key=lambda r: r["finished_at"])[-max(1, current):] if runs else []
        saturated = any(r.get("saturated") for r in latest)
        drained = bool(latest) and all(r.get("drained_at") for r in latest) and not saturated
        return Backlog("pull", sampled_at=latest[-1]["finished_at"] if latest else None, drained=drained,
                       saturated=saturated)

    def watermark(self, event_type: str, now: datetime) -> datetime | None:
        runs = self.state.recent_runs(event_type, now - RUN_HORIZON)
        drains = [r["drained_at"] for r in runs if r.get("drained_at") and r["drained_at"] <= now - SETTLE]
        holders = [(r.get("lease_until") or r["updated_at"], r.get("holding_oldest"))
                   for r in runs if not r.get("finished_at")]
        return watermark(drains, holders)


def metric_filter(metric_type: str, subscription: str) -> str:
    return (f'metric.type = "{metric_type}" AND resource.type = "pubsub_subscription" '
            f'AND resource.labels.subscription_id = "{subscription}"')


class CloudMonitoringBacklog:
    """From Cloud Monitoring's Pub/Sub subscription metrics (``roles/monitoring.viewer``)."""

    kind = "monitoring"

    def __init__(self, project: str, client: monitoring_v3.MetricServiceClient | None = None,
                 window: timedelta = WINDOW, stream: str = PRIMARY) -> None:
        self.project = project
        self._client = client
        self.window = window
        self.stream = stream

    def for_stream(self, stream: str) -> CloudMonitoringBacklog:
        return CloudMonitoringBacklog(self.project, self._client, self.window, stream)

    @property
    def client(self) -> monitoring_v3.MetricServiceClient:
        if self._client is None:
            from google.cloud import monitoring_v3

            self._client = monitoring_v3.MetricServiceClient()
        return self._client

    def latest(self, metric_type: str, subscription: str, now: datetime) -> tuple[float, datetime] | None:
        """The newest point (value, end time) of ``metric_type`` for ``subscription`` in the window."""
        from google.api_core import exceptions as gexc
        from google.cloud import monitoring_v3

        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{self.project}", filter=metric_filter(metric_type, subscription),
            interval=monitoring_v3.TimeInterval(start_time=now - self.window, end_time=now),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL)
        best: tuple[float, datetime] | None = None
        try:
            for series in self.client.list_time_series(request=request):
                for point in series.points:
                    at = point.interval.end_time.astimezone(UTC)
                    v = point.value
                    value = float(v.int64_value if "int64_value" in v else v.double_value)
                    if best is None or at > best[1]:
                        best = (value, at)
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"Cloud Monitoring: cannot read {metric_type} of {subscription}: {exc}") from exc
        return best

    def backlog(self, event_type: str, now: datetime, current: int = 1) -> Backlog:
        sub = Names(event_type, self.stream).subscription
        messages = self.latest(UNDELIVERED, sub, now)
        age = self.latest(OLDEST_AGE, sub, now)
        times = [p[1] for p in (messages, age) if p is not None]
        return Backlog("monitoring", messages=int(messages[0]) if messages else None,
                       oldest_age_s=age[0] if age else None, sampled_at=min(times) if times else None,
                       drained=messages is not None and messages[0] == 0)

    def watermark(self, event_type: str, now: datetime) -> datetime | None:
        age = self.latest(OLDEST_AGE, Names(event_type, self.stream).subscription, now)
        return metric_watermark(age[0], age[1]) if age else None


def open_backlog(kind: str, state: GaboState, project: str,
                 client: monitoring_v3.MetricServiceClient | None = None) -> BacklogSource:
    """The one place the backlog source is chosen (``FERRY_BACKLOG=pull|monitoring``)."""
    if kind == "pull":
        return PullStatsBacklog(state)
    if kind == "monitoring":
        return CloudMonitoringBacklog(project, client)
    raise InfraError(f"FERRY_BACKLOG={kind!r}: use 'pull' (workers' statistics) or 'monitoring' (Cloud Monitoring)")
