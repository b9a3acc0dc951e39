"""Self-service provisioning: applying an EventType creates its Pub/Sub resources and its endpoint.

An ApplyHook: ``ops`` writes endpoint ``events.<name>`` (SLA and partitioning of the type, owner of the
type) in the same batches as the manifest; ``after`` creates topics and subscriptions for every applied
type — unchanged ones too, so a deleted topic comes back on the next apply (create-if-absent is
idempotent) and grants access on them (in the cloud: the accounts with ``event_type_access`` in
``infra/``, on this type's resources only — nobody publishes to a topic it was not meant for). Deleting
a type deletes its delivery subscription only: topics, staging and partitions stay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from ferry import log
from ferry.domain.loading import Problem
from ferry.domain.manifests import RETIRED_LABEL, Endpoint, EventType, Manifest, event_type_of
from ferry.errors import Conflict
from ferry.gabo.delivery.broker import RETENTION_S, DeliveryBroker
from ferry.gabo.envelopes import iso
from ferry.gabo.names import DARKLOAD, Names, streams_of
from ferry.gabo.provisioning.access import Access, grant
from ferry.gabo.provisioning.reconcile import FORCED_DELETES, type_resources
from ferry.gabo.retention import DELETED_TYPES, deletion_record
from ferry.services.apply import Change, DeleteMode
from ferry.store.base import Op
from ferry.store.manifests import ManifestRecord, ManifestRepository

if TYPE_CHECKING:
    from ferry.gabo.delivery.broker import DeliveryBroker
    from ferry.gabo.service import Gabo
    from ferry.gabo.tables.bigquery import Tables
    from ferry.store.base import DocumentStore

logger = log.get("gabo.provision")

# A delivery subscription keeps unacked messages this long (its message retention).
SUBSCRIPTION_RETENTION_S = RETENTION_S


def endpoint_for(et: EventType, start: datetime) -> Endpoint:
    spec = et.spec
    return Endpoint.model_validate({
        "metadata": {"name": et.endpoint_name, "owner": et.metadata.owner,
                     "description": f"events of type {et.name}, delivered by Gabo",
                     "labels": {"source": "gabo"}},
        "spec": {"partitioning": spec.partitioning, "timezone": "UTC", "start": start,
                 "sla": spec.sla.model_dump(exclude_none=True)},
    })


def provision(broker: DeliveryBroker, et: EventType, access: Access = Access()) -> dict[str, bool]:
    """Create what ``et`` needs and grant ``access`` on it, on its own resources only (idempotent).
    Returns what was created or granted (``grant:<resource>``)."""
    topics, subs = type_resources(et)
    created: dict[str, bool] = {}
    for t in topics:
        created[t] = broker.ensure_topic(t)
    for spec in subs:
        created[spec.name] = broker.ensure_subscription(spec)
    created.update(grant(broker, access.grants(Names(et.name), topics, [s.name for s in subs])))
    return created


def _schema_problems(i: int, et: EventType, repo: ManifestRepository) -> list[Problem]:
    """A re-applied type's schema change that would break readers of its periods (ferry.gabo.tables.evolution)."""
    from ferry.gabo.tables import evolution

    rec = repo.get("EventType", et.name)
    if rec is None:
        return []
    old = rec.model_as(EventType).spec.schema_
    accepted = evolution.allowed(et.metadata.labels)
    out = []
    for path, why in evolution.breaking_changes(old, et.spec.schema_):
        if path in accepted:
            log.event(logger, log.WARNING, f"event type {et.name}: breaking schema change of {path} accepted by the "
                      f"label {evolution.ESCAPE_LABEL} ({why})", labels={"event_type": et.name})
            continue
        out.append(Problem("(input)", i, f"spec.schema: {path}",
                           f"field {path} {why}; only optional fields may be added (docs/gabo.md, \"Schema "
                           f"evolution\"), or accept the break with the label {evolution.ESCAPE_LABEL}: {path}",
                           et.kind, et.name))
    return out


class GaboApplyHook:
    """Gabo's part of ``ferry apply``: a type's endpoint in the same writes as its manifest, its Pub/Sub
    resources, grants and table after. ``broker``, ``gabo`` (the facade: draining a deleted type) and
    ``tables`` are asked only when an applied change needs them."""

    def __init__(self, store: DocumentStore, broker: Callable[[], DeliveryBroker], access: Access,
                 gabo: Callable[[], Gabo], tables: Callable[[], Tables | None]) -> None:
        self.tables = tables
        self.store = store
        self.manifests = ManifestRepository(store)
        self.broker = broker
        self.access = access
        self.gabo = gabo

    def check(self, manifests: Sequence[Manifest], repo: ManifestRepository) -> list[Problem]:
        problems = []
        types = {m.name for m in manifests if isinstance(m, EventType)}
        for i, m in enumerate(manifests):
            if isinstance(m, EventType):
                problems.extend(_schema_problems(i, m, repo))
            owner_type = event_type_of(m.name) if m.kind == "Endpoint" else None
            if owner_type in types:
                problems.append(Problem("(input)", i, "metadata.name",
                                        f"endpoint {m.name} is registered by event type {owner_type}", m.kind, m.name))
        return problems

    def ops(self, changes: Sequence[Change], now: datetime) -> list[Op]:
        ops = []
        repo = self.manifests
        for c in changes:
            if not isinstance(c.manifest, EventType):
                continue
            name = c.manifest.endpoint_name
            if c.action == "deleted":
                # the endpoint stays (its partitions are still data that others depend on), retired: no
                # partition is expected after the deletion; the type's resources and records go after
                # their retention (retention.DELETED_RETENTION: the reconcile and the cleanup)
                topics, subs = type_resources(c.manifest)
                ops.append(Op.set(DELETED_TYPES, c.manifest.name,
                                  deletion_record(c.manifest.name, now, topics, [s.name for s in subs])))
                prev = repo.get("Endpoint", name)
                if prev is not None:
                    ops.extend(self._retire(prev, now))
                continue
            if c.action == "created":
                ops.append(Op.delete(DELETED_TYPES, c.manifest.name))  # applied again: nothing to retire
            prev = repo.get("Endpoint", name)
            start = prev.model_as(Endpoint).spec.start if prev else None
            ep = endpoint_for(c.manifest, start or _floor(c.manifest, now))
            # a type created again rewrites its (retired) endpoint: the evaluator's sync takes it up again
            if prev is None or prev.fingerprint != ep.fingerprint() or c.action == "created":
                ops.append(repo.op_for(repo.record_for(ep, prev, now)))
        return ops

    def _retire(self, prev: ManifestRecord, now: datetime) -> list[Op]:
        """Retire the type's endpoint: labelled ``ferry.retired`` (the evaluator's sync keeps no summary of
        it) and its summary deleted, so a deleted type opens no late incidents; the endpoint and its
        partitions stay readable. Applying the type again rewrites the endpoint without the label."""
        from ferry.datamon.port import retire_op

        repo = self.manifests
        ep = prev.model_as(Endpoint)
        labels = {**ep.metadata.labels, RETIRED_LABEL: iso(now)}
        retired_ep = ep.model_copy(update={"metadata": ep.metadata.model_copy(update={"labels": labels})})
        return [repo.op_for(repo.record_for(retired_ep, prev, now)), retire_op(ep.metadata.name)]

    def before_delete(self, record: ManifestRecord, now: datetime, actor: str | None,
                      mode: DeleteMode) -> dict[str, Any] | None:
        """An EventType with accepted events not yet closed is not deleted: refused with the counts
        (Conflict, exit 3), drained first (deliver, close — then re-checked), or, forced, recorded in
        ``gabo_forced_deletes`` with the counts given up (its subscription is kept until its retention
        ends, so the events can still be recovered)."""
        if record.kind != "EventType":
            return None
        g = self.gabo()
        et = cast(EventType, record.model())
        out: dict[str, Any] = {}
        if mode == "drain":
            out["drain"] = g.drain(et, record.created_at, now)
        left = g.outstanding(et, record.created_at, now)
        if mode == "force":
            keep_until = now + timedelta(seconds=SUBSCRIPTION_RETENTION_S)
            self.store.write([Op.set(FORCED_DELETES, f"{et.name}~{now:%Y%m%dT%H%M%S}", {
                "event_type": et.name, "actor": actor, "at": now, "outstanding": left,
                "subscription": Names(et.name).subscription, "keep_until": keep_until})])
            log.event(logger, 30, f"event type {et.name} force-deleted with data outstanding", labels={
                "event_type": et.name}, outstanding=left, actor=actor)
            return {"forced": left, "subscription_kept_until": keep_until.isoformat()}
        if left["unclosed_periods"] or left["staging_objects"]:
            hint = ("the drain did not finish: run it again (a period closes once it has ended)" if mode == "drain" else
                    "deliver and close it first with --drain, or give it up with --force")
            raise Conflict(f"event type {et.name} has {left['accepted']:,} accepted events in "
                           f"{left['unclosed_periods']} period(s) not closed ({left['undelivered']:,} not "
                           f"delivered, {left['staging_objects']} staging object(s) not closed): {hint}",
                           {"event_type": et.name, **left, **out})
        return out or None

    def after(self, changes: Sequence[Change], now: datetime) -> None:
        types = [c for c in changes if isinstance(c.manifest, EventType)]
        if not types:
            return  # no broker is built (nor connected) for applies without event types
        broker = self.broker()
        for c in types:
            if c.action == "deleted" and c.force:
                if cast(EventType, c.manifest).spec.darkload > 0:  # nothing is owed of the shadow's sample
                    broker.delete_subscription(Names(c.manifest.name, DARKLOAD).subscription)
                log.event(logger, 30, f"event type {c.manifest.name} deleted with --force: its subscription "
                          "is kept until its retention ends", labels={"event_type": c.manifest.name})
                continue
            if c.action == "deleted":
                for stream in streams_of(cast(EventType, c.manifest).spec.darkload):
                    broker.delete_subscription(Names(c.manifest.name, stream).subscription)
                log.event(logger, log.INFO, f"event type {c.manifest.name} deleted: delivery stopped, data kept",
                          labels={"event_type": c.manifest.name})
                continue
            created = provision(broker, cast(EventType, c.manifest),  # `types` holds EventTypes only
                                self.access)
            et = cast(EventType, c.manifest)
            tables = self.tables()
            if tables is not None and et.spec.format == "parquet":  # the type's table, widened on additions
                created[f"table:{et.name}"] = tables.ensure_table(et.name, et.spec.schema_, _width(et)) != "unchanged"
            if any(created.values()):
                log.event(logger, log.INFO, f"provisioned event type {c.manifest.name}",
                          labels={"event_type": c.manifest.name}, created=[k for k, v in created.items() if v])


def _width(et: EventType) -> timedelta:
    from ferry.domain import periods

    cadence = periods.partitioning(et.spec.partitioning)
    start = cadence.floor(datetime(2026, 1, 5, tzinfo=UTC))
    return cadence.next(start) - start


def _floor(et: EventType, now: datetime) -> datetime:
    from ferry.domain import periods

    return periods.partitioning(et.spec.partitioning).floor(now)


