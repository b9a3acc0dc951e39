"""A local fake of Secret Manager's ``google.cloud.secretmanager.v1.SecretManagerService`` /
``AccessSecretVersion``, speaking the real gRPC wire protocol with the library's message types, so the
real ``SecretManagerServiceClient`` talks to it unchanged. Secrets live in memory per version name;
``latest`` is the newest version; a missing one is NOT_FOUND, ``deny`` answers PERMISSION_DENIED."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc import (
    SecretManagerServiceGrpcTransport,
)

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
NAME = re.compile(r"^projects/([^/]+)/secrets/([^/]+)/versions/([^/]+)$")


class FakeSecretManager:
    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], list[bytes]] = {}
        self.requests: list[str] = []
        self.deny = False

    def add(self, project: str, secret: str, value: bytes) -> int:
        self.versions.setdefault((project, secret), []).append(value)
        return len(self.versions[(project, secret)])

    def access(self, request: secretmanager_v1.AccessSecretVersionRequest,
               context: grpc.ServicerContext) -> secretmanager_v1.AccessSecretVersionResponse:
        self.requests.append(request.name)
        m = NAME.match(request.name)
        if m is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad name {request.name!r}")
        if self.deny:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"Permission 'secretmanager.versions.access' denied for resource '{request.name}'")
        versions = self.versions.get((m.group(1), m.group(2))) or []
        which = len(versions) if m.group(3) == "latest" else int(m.group(3)) if m.group(3).isdigit() else 0
        if not 0 < which <= len(versions):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{request.name}] not found.")
        return secretmanager_v1.AccessSecretVersionResponse(
            name=f"projects/{m.group(1)}/secrets/{m.group(2)}/versions/{which}",
            payload=secretmanager_v1.SecretPayload(data=versions[which - 1]))


@contextmanager
def serve() -> Iterator[tuple[FakeSecretManager, secretmanager_v1.SecretManagerServiceClient]]:
    """Run the fake on a free local port; yield it and a real client connected to it."""
    fake = FakeSecretManager()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
            fake.access, request_deserializer=secretmanager_v1.AccessSecretVersionRequest.deserialize,
            response_serializer=secretmanager_v1.AccessSecretVersionResponse.serialize)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield fake, secretmanager_v1.SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=channel))
    finally:
        channel.close()
        server.stop(None)
