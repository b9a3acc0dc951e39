"""Pub/Sub adapter of the publisher port (the emulator when PUBSUB_EMULATOR_HOST is set)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent import futures
from typing import Any

from ferry.broker.base import Message
from ferry.errors import InfraError, NotFound


class PubSubPublisher:
    def __init__(self, project: str, client: Any = None, timeout_s: float = 60.0) -> None:
        self.project = project
        self._client = client
        self._timeout_s = timeout_s

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import pubsub_v1

            self._client = pubsub_v1.PublisherClient(
                batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_bytes=9 * 1024 * 1024,
                                                             max_latency=0.01))
        return self._client

    def topic_path(self, topic: str) -> str:
        return topic if topic.startswith("projects/") else f"projects/{self.project}/topics/{topic}"

    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        from google.api_core import exceptions as gexc

        path = self.topic_path(topic)
        pending = [self.client.publish(path, m.data, **m.attributes) for m in messages]
        try:
            done, not_done = futures.wait(pending, timeout=self._timeout_s)
            if not_done:
                raise InfraError(f"{len(not_done)} message(s) to {topic} not confirmed in {self._timeout_s:.0f}s")
            return [f.result() for f in pending]
        except gexc.NotFound as exc:
            raise NotFound(f"topic {topic} does not exist") from exc
        except gexc.GoogleAPICallError as exc:
            raise InfraError(f"publishing to {topic} failed: {exc}") from exc
