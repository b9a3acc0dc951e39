"""A local fake of Pub/Sub's IAM surface (``google.iam.v1.IAMPolicy`` ``GetIamPolicy`` /
``SetIamPolicy`` on topics and subscriptions), speaking the real gRPC wire protocol with the library's
message types, so the real ``PublisherClient``/``SubscriberClient`` talk to it unchanged. (The Pub/Sub
emulator answers UNIMPLEMENTED to both.) Policies carry etags as the service's do: a write under a stale
etag is ABORTED; an unknown resource is NOT_FOUND; ``race`` changes a policy between a read and its
write once (another writer), to exercise the read-modify-write retry."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
from google.cloud import pubsub_v1
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

SERVICE = "google.iam.v1.IAMPolicy"


class FakePubSubIam:
    def __init__(self) -> None:
        self.policies: dict[str, policy_pb2.Policy] = {}
        self.versions: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.race: tuple[str, str, str] | None = None  # (resource, role, member) added before the next write

    def add_resource(self, path: str) -> None:
        self.policies[path] = policy_pb2.Policy()
        self.versions[path] = 1

    def members(self, path: str, role: str) -> set[str]:
        return {m for b in self.policies[path].bindings if b.role == role for m in b.members}

    def _etag(self, path: str) -> bytes:
        return f"v{self.versions[path]}".encode()

    def get(self, request: iam_policy_pb2.GetIamPolicyRequest,
            context: grpc.ServicerContext) -> policy_pb2.Policy:
        self.requests.append(("get", request.resource))
        if request.resource not in self.policies:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={request.resource}).")
        out = policy_pb2.Policy()
        out.CopyFrom(self.policies[request.resource])
        out.etag = self._etag(request.resource)
        if self.race and self.race[0] == request.resource:  # another writer, right after this read
            resource, role, member = self.race
            self.race = None
            self.policies[resource].bindings.add(role=role, members=[member])
            self.versions[resource] += 1
        return out

    def set(self, request: iam_policy_pb2.SetIamPolicyRequest,
            context: grpc.ServicerContext) -> policy_pb2.Policy:
        self.requests.append(("set", request.resource))
        if request.resource not in self.policies:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={request.resource}).")
        if request.policy.etag and request.policy.etag != self._etag(request.resource):
            context.abort(grpc.StatusCode.ABORTED, "There were concurrent policy changes. Please retry the "
                                                   "whole read-modify-write with exponential backoff.")
        stored = policy_pb2.Policy()
        stored.CopyFrom(request.policy)
        stored.etag = b""
        self.policies[request.resource] = stored
        self.versions[request.resource] += 1
        out = policy_pb2.Policy()
        out.CopyFrom(stored)
        out.etag = self._etag(request.resource)
        return out


@contextmanager
def serve() -> Iterator[tuple[FakePubSubIam, pubsub_v1.PublisherClient, pubsub_v1.SubscriberClient]]:
    """Run the fake on a free local port; yield it and real publisher and subscriber clients on it."""
    fake = FakePubSubIam()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "GetIamPolicy": grpc.unary_unary_rpc_method_handler(
            fake.get, request_deserializer=iam_policy_pb2.GetIamPolicyRequest.FromString,
            response_serializer=policy_pb2.Policy.SerializeToString),
        "SetIamPolicy": grpc.unary_unary_rpc_method_handler(
            fake.set, request_deserializer=iam_policy_pb2.SetIamPolicyRequest.FromString,
            response_serializer=policy_pb2.Policy.SerializeToString)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(2)]
    try:
        yield (fake, pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=channels[0])),
               pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channels[1])))
    finally:
        for c in channels:
            c.close()
        server.stop(None)
