"""The publisher port: publish messages to a topic and know they were accepted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Message:
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)


class Publisher(Protocol):
    def publish(self, topic: str, messages: Sequence[Message]) -> list[str]:
        """Publish ``messages`` to topic ``topic`` (short name) and wait until every one is confirmed.

        Returns:
            the message ids, in order.
        Raises:
            InfraError: any message was not confirmed (the caller must not ack its input).
        """
        ...
