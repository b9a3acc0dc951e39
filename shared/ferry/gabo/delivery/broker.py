"""The delivery-broker port: provision topics and subscriptions, pull, ack and extend leases.

Adapters: Pub/Sub (the emulator when PUBSUB_EMULATOR_HOST is set) and an in-memory fake for unit tests
that is also a Publisher, so ingest → delivery runs in one process without the emulator.

Over 400 lines, on purpose: the port and its two adapters side by side, so that a change to one shows
what the other must do alike (the in-memory fake models the real service's semantics: leases, dead
letters, IAM policies).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from ferry.broker.base import Message
from ferry.errors import InfraError, NotFound
from ferry.gabo.delivery.batching import Pulled
from ferry.infra.pubsub import push_config_matches

RETENTION_S = 7 * 24 * 3600
ResourceKind = Literal["topic", "subscription"]
# Attempts of one policy read-modify-write when another writer changed it in between (etag mismatch).
GRANT_ATTEMPTS = 4


class Unanswered(list[Pulled]):
    """An empty pull the service did not answer within its wait (a client-side deadline).

    Falsy like any empty pull, but no evidence that the subscription was empty: a slow service may
    have held messages. Only an answered empty pull may advance the closer's watermark.
    """


@dataclass(frozen=True)
class SubscriptionSpec:
    name: str
    topic: str
    ack_deadline_s: int = 60
    retention_s: int = RETENTION_S
    dead_letter_topic: str | None = None
    max_delivery_attempts: int = 5


class DeliveryBroker(Protocol):
    def existing(self) -> tuple[set[str], set[str]]:
        """The short names of the project's topics and subscriptions (the reconcile's one look)."""
        ...

    def ensure_topic(self, name: str) -> bool:
        """Create topic ``name`` if absent. Returns True when created."""
        ...

    def ensure_subscription(self, spec: SubscriptionSpec) -> bool:
        """Create the subscription if absent, else bring its ack deadline / dead-letter policy in line."""
        ...

    def count_available(self, subscription: str, cap: int) -> int:
        """How many messages ``subscription`` has available now (at most ``cap``; pulled without waiting
        and handed straight back — a lower bound). Raises NotFound, InfraError."""
        ...

    def ensure_push_subscription(self, request: Mapping[str, Any]) -> bool:
        """Create the push subscription ``request`` (as :func:`ferry.infra.pubsub.push_subscription_request`
        builds it) if absent, else set its push config when it differs. Returns True when it was created
        or its push config corrected. Raises InfraError."""
        ...

    def delete_subscription(self, name: str) -> bool:
        """Delete if present. Returns True when it existed."""
        ...

    def delete_topic(self, name: str) -> bool:
        """Delete topic ``name`` if present (its subscriptions stay, detached). Returns True when it existed."""
        ...

    def grant(self, kind: ResourceKind, name: str, role: str, members: Sequence[str]) -> bool:
        """Give ``members`` ``role`` on topic or subscription ``name`` only (kept: the others already
        there). Returns True when the policy changed. Raises InfraError."""
        ...

    def pull(self, subscription: str, max_messages: int, timeout_s: float = 5.0) -> list[Pulled]:
        """Up to ``max_messages`` available messages, leased for the subscription's ack deadline.

        Empty when none was available within ``timeout_s``; :class:`Unanswered` (also empty) when the
        service gave no answer by then.
        """
        ...

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        """Acknowledge (the messages will not be redelivered). Raises InfraError."""
        ...

    def extend(self, subscription: str, ack_ids: Sequence[str], seconds: int) -> None:
        """Extend (or with 0, release) the leases of ``ack_ids``."""
        ...


def _chunks(items: Sequence[str], n: int) -> list[Sequence[str]]:
    return [items[i:i + n] for i in range(0, len(items), n)]


class PubSubBroker:
    def __init__(self, project: str, subscriber: Any = None, publisher: Any = None) -> None:
        self.project = project
        self._subscriber = subscriber
        self._publisher = publisher

    @property
    def subscriber(self) -> Any:
        if self._subscriber is None:
            from google.cloud import pubsub_v1

            self._subscriber = pubsub_v1.SubscriberClient()
        return self._subscriber

    @property
    def publisher(self) -> Any:
        if self._publisher is None:
            from google.cloud import pubsub_v1

            self._publisher = pubsub_v1.PublisherClient()
        return self._publisher

    def topic_path(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def sub_path(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"

    def existing(self) -> tuple[set[str], set[str]]:
        from google.api_core import exceptions as gexc

        project = f"projects/{self.project}"
        try:
            topics = {t.name.rsplit("/", 1)[1] for t in self.publisher.list_topics(request={"project": project})}
            subs = {s.name.rsplit("/", 1)[1]
                    for s in self.subscriber.list_subscriptions(request={"project": project})}
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"listing topics and subscriptions failed: {exc}") from exc
        return topics, subs

    def ensure_topic(self, name: str) -> bool:
        from google.api_core import exceptions as gexc

        try:
            self.publisher.create_topic(name=self.topic_path(name))
            return True
        except gexc.AlreadyExists:
            return False
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"creating topic {name} failed: {exc}") from exc

    def ensure_subscription(self, spec: SubscriptionSpec) -> bool:
        from google.api_core import exceptions as gexc
        from google.protobuf import duration_pb2, field_mask_pb2
        from google.pubsub_v1.types import DeadLetterPolicy, Subscription

        dlp = (DeadLetterPolicy(dead_letter_topic=self.topic_path(spec.dead_letter_topic),
                                max_delivery_attempts=spec.max_delivery_attempts)
               if spec.dead_letter_topic else None)
        sub = Subscription(name=self.sub_path(spec.name), topic=self.topic_path(spec.topic),
                           ack_deadline_seconds=spec.ack_deadline_s,
                           message_retention_duration=duration_pb2.Duration(seconds=spec.retention_s),
                           dead_letter_policy=dlp)
        try:
            self.subscriber.create_subscription(request=sub)
            return True
        except gexc.AlreadyExists:
            paths = ["ack_deadline_seconds", "message_retention_duration"] + (["dead_letter_policy"] if dlp else [])
            try:
                self.subscriber.update_subscription(
                    request={"subscription": sub, "update_mask": field_mask_pb2.FieldMask(paths=paths)})
            except gexc.GoogleAPICallError as exc:  # converge best-effort; the subscription exists
                raise InfraError(f"updating subscription {spec.name} failed: {exc}") from exc
            return False
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"creating subscription {spec.name} failed: {exc}") from exc

    def delete_topic(self, name: str) -> bool:
        from google.api_core import exceptions as gexc

        try:
            self.publisher.delete_topic(request={"topic": self.topic_path(name)})
            return True
        except gexc.NotFound:
            return False
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"deleting topic {name} failed: {exc}") from exc

    def count_available(self, subscription: str, cap: int) -> int:
        from google.api_core import exceptions as gexc

        path = self.sub_path(subscription)
        seen: dict[str, str] = {}
        try:
            while len(seen) < cap:
                resp = self.subscriber.pull(request={"subscription": path, "max_messages": min(1000, cap - len(seen)),
                                                     "return_immediately": True}, timeout=10)
                fresh = [(m.message.message_id, m.ack_id) for m in resp.received_messages
                         if m.message.message_id not in seen]
                if not fresh:
                    break
                seen.update(fresh)
            ack_ids = list(seen.values())
            for i in range(0, len(ack_ids), 1000):
                self.subscriber.modify_ack_deadline(request={"subscription": path, "ack_ids": ack_ids[i:i + 1000],
                                                             "ack_deadline_seconds": 0})
        except gexc.NotFound as exc:
            raise NotFound(f"subscription {subscription} does not exist") from exc
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"counting the messages of {subscription} failed: {exc}") from exc
        return len(seen)

    def ensure_push_subscription(self, request: Mapping[str, Any]) -> bool:
        from google.api_core import exceptions as gexc

        name = request["name"].rsplit("/", 1)[-1]
        try:
            try:
                self.subscriber.create_subscription(request=dict(request))
                return True
            except gexc.InvalidArgument:
                if "dead_letter_policy" not in request:
                    raise
                # the emulator refuses some dead-letter policies: the push matters more
                self.subscriber.create_subscription(
                    request={k: v for k, v in request.items() if k != "dead_letter_policy"})
                return True
        except gexc.AlreadyExists:
            pass
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"creating push subscription {name} failed: {exc}") from exc
        try:
            have = self.subscriber.get_subscription(request={"subscription": request["name"]})
            if push_config_matches(have.push_config, request["push_config"]):
                return False
            self.subscriber.modify_push_config(request={"subscription": request["name"],
                                                        "push_config": request["push_config"]})
            return True
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"correcting push subscription {name} failed: {exc}") from exc

    def delete_subscription(self, name: str) -> bool:
        from google.api_core import exceptions as gexc

        try:
            self.subscriber.delete_subscription(subscription=self.sub_path(name))
            return True
        except gexc.NotFound:
            return False
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"deleting subscription {name} failed: {exc}") from exc

    def grant(self, kind: ResourceKind, name: str, role: str, members: Sequence[str]) -> bool:
        """Read the resource's IAM policy, add what is missing, write it back under the read's etag
        (a concurrent change makes the write fail: read again)."""
        from google.api_core import exceptions as gexc

        client, path = ((self.publisher, self.topic_path(name)) if kind == "topic"
                        else (self.subscriber, self.sub_path(name)))
        for attempt in range(GRANT_ATTEMPTS):
            try:
                policy = client.get_iam_policy(request={"resource": path})
                binding = next((b for b in policy.bindings if b.role == role and not b.HasField("condition")), None)
                missing = [m for m in members if binding is None or m not in binding.members]
                if not missing:
                    return False
                if binding is None:
                    binding = policy.bindings.add(role=role)
                binding.members.extend(missing)
                client.set_iam_policy(request={"resource": path, "policy": policy})
                return True
            except (gexc.Aborted, gexc.FailedPrecondition, gexc.Conflict):
                if attempt == GRANT_ATTEMPTS - 1:
                    raise InfraError(f"granting {role} on {kind} {name}: its policy kept changing") from None
            except gexc.GoogleAPICallError as exc:
                raise InfraError(f"granting {role} on {kind} {name} failed: {exc}") from exc
        return False  # unreachable: the last attempt returns or raises

    def pull(self, subscription: str, max_messages: int, timeout_s: float = 5.0) -> list[Pulled]:
        from google.api_core import exceptions as gexc

        try:
            resp = self.subscriber.pull(request={"subscription": self.sub_path(subscription),
                                                 "max_messages": max_messages}, timeout=timeout_s)
        except gexc.DeadlineExceeded:
            return Unanswered()
        except gexc.NotFound as exc:
            raise NotFound(f"subscription {subscription} does not exist (is its event type applied?)") from exc
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"pulling from {subscription} failed: {exc}") from exc
        # Read the protobuf under the proto-plus wrapper: its per-field marshalling cost a third of a
        # worker's time (measured with cProfile).
        pb = type(resp).pb(resp)
        out = []
        for r in pb.received_messages:
            m = r.message
            pt = m.publish_time
            out.append(Pulled(r.ack_id, m.message_id, m.data, m.attributes,
                              datetime.fromtimestamp(pt.seconds + pt.nanos / 1e9, UTC)
                              if m.HasField("publish_time") else datetime.now(UTC),
                              r.delivery_attempt))
        return out

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        from google.api_core import exceptions as gexc
        from google.pubsub_v1.types import AcknowledgeRequest

        # Requests built as raw protobufs: proto-plus would marshal every ack id one by one.
        make = AcknowledgeRequest.pb()
        try:
            for chunk in _chunks(list(ack_ids), 1000):
                self.subscriber.acknowledge(request=AcknowledgeRequest(
                    make(subscription=self.sub_path(subscription), ack_ids=chunk)))
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"acking on {subscription} failed: {exc}") from exc

    def extend(self, subscription: str, ack_ids: Sequence[str], seconds: int) -> None:
        from google.api_core import exceptions as gexc
        from google.pubsub_v1.types import ModifyAckDeadlineRequest

        make = ModifyAckDeadlineRequest.pb()
        try:
            for chunk in _chunks(list(ack_ids), 1000):
                self.subscriber.modify_ack_deadline(request=ModifyAckDeadlineRequest(
                    make(subscription=self.sub_path(subscription), ack_ids=chunk, ack_deadline_seconds=seconds)))
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"extending leases on {subscription} failed: {exc}") from exc


@dataclass
class _Sub:
    spec: SubscriptionSpec
    available: list[tuple[str, Message, datetime]] = field(default_factory=list)
    leased: dict[str, tuple[str, Message, datetime, float, int]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)


class MemoryBroker:
    """In-memory topics and pull subscriptions with leases, redelivery and dead-lettering.

    Also a Publisher (``publish``), and ``topics`` keeps every message per topic for assertions.
    """

    def __init__(self, clock: Any = None) -> None:
        self.topics: dict[str, list[Message]] = {}
        self.subs: dict[str, _Sub] = {}
        # (kind, name) → role → members: the grants made (IAM policies of the real service)
        self.policies: dict[tuple[str, str], dict[str, set[str]]] = {}
        self.push_configs: dict[str, dict[str, Any]] = {}  # push subscriptions' configs (name → push_config)
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._clock = clock

    def _now(self) -> datetime:
        return self._clock.now() if self._clock else datetime.now(UTC)

    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        with self._lock:
            if topic not in self.topics:
                raise NotFound(f"topic {topic} does not exist")
            ids = []
            for m in messages:
                mid = str(next(self._ids))
                ids.append(mid)
                self.topics[topic].append(m)
                for s in self.subs.values():
                    if s.spec.topic == topic:
                        s.available.append((mid, m, self._now()))
            return ids

    def existing(self) -> tuple[set[str], set[str]]:
        with self._lock:
            return set(self.topics), set(self.subs)

    def ensure_topic(self, name: str) -> bool:
        with self._lock:
            if name in self.topics:
                return False
            self.topics[name] = []
            return True

    def ensure_subscription(self, spec: SubscriptionSpec) -> bool:
        with self._lock:
            if spec.name in self.subs:
                self.subs[spec.name].spec = spec
                return False
            self.subs[spec.name] = _Sub(spec)
            return True

    def count_available(self, subscription: str, cap: int) -> int:
        with self._lock:
            sub = self.subs.get(subscription)
            if sub is None:
                raise NotFound(f"subscription {subscription} does not exist")
            return min(cap, len(sub.available))

    def ensure_push_subscription(self, request: Mapping[str, Any]) -> bool:
        name = request["name"].rsplit("/", 1)[-1]
        with self._lock:
            if name in self.subs and self.push_configs.get(name) == request["push_config"]:
                return False
            if name not in self.subs:
                self.subs[name] = _Sub(SubscriptionSpec(name, request["topic"].rsplit("/", 1)[-1]))
            self.push_configs[name] = dict(request["push_config"])
            return True

    def delete_subscription(self, name: str) -> bool:
        with self._lock:
            return self.subs.pop(name, None) is not None

    def delete_topic(self, name: str) -> bool:
        with self._lock:
            return self.topics.pop(name, None) is not None

    def grant(self, kind: ResourceKind, name: str, role: str, members: Sequence[str]) -> bool:
        with self._lock:
            if (name not in self.topics) if kind == "topic" else (name not in self.subs):
                raise InfraError(f"granting {role} on {kind} {name} failed: it does not exist")
            have = self.policies.setdefault((kind, name), {}).setdefault(role, set())
            missing = set(members) - have
            have |= missing
            return bool(missing)

    def _expire(self, s: _Sub) -> None:
        now = time.monotonic()
        for ack_id, (mid, m, pt, until, _) in list(s.leased.items()):
            if until <= now:
                del s.leased[ack_id]
                self._return(s, mid, m, pt)

    def _return(self, s: _Sub, mid: str, m: Message, pt: datetime) -> None:
        if s.spec.dead_letter_topic and s.attempts.get(mid, 0) >= s.spec.max_delivery_attempts:
            self.publish(s.spec.dead_letter_topic, [m])
            return
        s.available.insert(0, (mid, m, pt))

    def pull(self, subscription: str, max_messages: int, timeout_s: float = 5.0) -> list[Pulled]:
        with self._lock:
            s = self.subs.get(subscription)
            if s is None:
                raise NotFound(f"subscription {subscription} does not exist")
            self._expire(s)
            taken, s.available = s.available[:max_messages], s.available[max_messages:]
            out = []
            for mid, m, pt in taken:
                s.attempts[mid] = s.attempts.get(mid, 0) + 1
                ack_id = f"{mid}:{s.attempts[mid]}"
                s.leased[ack_id] = (mid, m, pt, time.monotonic() + s.spec.ack_deadline_s, s.attempts[mid])
                out.append(Pulled(ack_id, mid, m.data, dict(m.attributes), pt, s.attempts[mid]))
            return out

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        with self._lock:
            s = self.subs[subscription]
            for a in ack_ids:
                s.leased.pop(a, None)

    def extend(self, subscription: str, ack_ids: Sequence[str], seconds: int) -> None:
        with self._lock:
            s = self.subs[subscription]
            for a in ack_ids:
                if a in s.leased:
                    mid, m, pt, _, n = s.leased[a]
                    if seconds == 0:
                        del s.leased[a]
                        self._return(s, mid, m, pt)
                    else:
                        s.leased[a] = (mid, m, pt, time.monotonic() + seconds, n)

    def take(self, topic: str) -> list[Message]:
        """Everything published to ``topic`` so far, forgetting it (assertions)."""
        with self._lock:
            taken, self.topics[topic] = self.topics.get(topic, []), []
            return taken

    def drop_leases(self, subscription: str) -> None:
        """Simulate a crashed worker whose leases expired: everything leased is available again."""
        with self._lock:
            s = self.subs[subscription]
            for ack_id in list(s.leased):
                mid, m, pt, _, _ = s.leased.pop(ack_id)
                self._return(s, mid, m, pt)
