"""The one place that builds adapters and services from configuration (lazily, once per process)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ferry.broker.base import Publisher
from ferry.clock import Clock, SystemClock
from ferry.config import Settings
from ferry.services.apply import ApplyHook, ApplyService
from ferry.services.authz import Authorizer
from ferry.store.base import DocumentStore
from ferry.store.manifests import ManifestRepository

# Subsystems register apply hooks here (by factory, so nothing is built at import time).
APPLY_HOOK_FACTORIES: list[Callable[[Services], ApplyHook]] = []


@dataclass
class Services:
    settings: Settings
    store: DocumentStore
    clock: Clock
    _publisher: Publisher | None = None
    _publisher_factory: Callable[[], Publisher] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            # Built directly (tests) without one: the publisher the settings name.
            factory = self._publisher_factory or (lambda: publisher_for(self.settings))
            self._publisher = factory()
        return self._publisher

    @property
    def manifests(self) -> ManifestRepository:
        return ManifestRepository(self.store)

    @property
    def authorizer(self) -> Authorizer:
        return Authorizer(self.manifests, self.settings.admin_team)

    @property
    def apply(self) -> ApplyService:
        return ApplyService(self.manifests, self.authorizer, [f(self) for f in APPLY_HOOK_FACTORIES])

    def extra(self, key: str, factory: Callable[[], Any]) -> Any:
        """A lazily built, per-process singleton of a subsystem (e.g. its launcher or sink)."""
        if key not in self.extras:
            self.extras[key] = factory()
        return self.extras[key]

    @classmethod
    def in_memory(cls, clock: Clock | None = None, settings: Settings | None = None) -> Services:
        from ferry.broker.memory import MemoryPublisher
        from ferry.store.memory import MemoryStore

        return cls(settings or Settings(store="memory", broker="memory"), MemoryStore(), clock or SystemClock(),
                   _publisher=MemoryPublisher())

    @classmethod
    def from_settings(cls, settings: Settings | None = None, clock: Clock | None = None) -> Services:
        settings = settings or Settings()
        if settings.store == "memory":
            from ferry.store.memory import MemoryStore

            store: DocumentStore = MemoryStore()
        else:
            from ferry.store.firestore import FirestoreStore

            store = FirestoreStore(settings.project)

        return cls(settings, store, clock or SystemClock(), _publisher_factory=lambda: publisher_for(settings))


def publisher_for(settings: Settings) -> Publisher:
    """The Publisher adapter ``settings.broker`` names (``memory`` or Pub/Sub; built on first use)."""
    if settings.broker == "memory":
        from ferry.broker.memory import MemoryPublisher

        return MemoryPublisher()
    from ferry.broker.pubsub import PubSubPublisher

    return PubSubPublisher(settings.project)


_services: Services | None = None
_lock = threading.Lock()


def services() -> Services:
    """The process-wide services (functions reuse them across invocations)."""
    global _services
    with _lock:
        if _services is None:
            _services = Services.from_settings()
        return _services


def override(s: Services | None) -> None:
    """Tests: install (or reset with None) the process-wide services."""
    global _services
    with _lock:
        _services = s
