"""The composition root: the one place that chooses and builds adapters.

``bootstrap(settings, **overrides)`` returns the ``Services`` a process (or a test) runs on: the
document store, the broker (one object both publishes and — for Gabo — pulls), Gabo's sink and
backlog source, Styx's launcher, the clock, Datamon's port for the other subsystems and the apply
hooks, from an explicit list. Each adapter is the one ``settings`` names, built on first use, unless
given by keyword (tests: ``bootstrap(settings, launcher=FakeLauncher(), datamon=FakeDatamon())``).
Nothing registers itself by being imported.

``process_services()`` is the lazily built, process-wide ``Services`` the Cloud Functions reuse
across invocations (``use_process_services`` installs another one: tests, the local harness).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from ferry.broker.base import Publisher
from ferry.clock import Clock, SystemClock
from ferry.config import Settings
from ferry.services.apply import ApplyHook, ApplyService
from ferry.services.authz import Authorizer
from ferry.store.base import DocumentStore
from ferry.store.manifests import ManifestRepository

if TYPE_CHECKING:
    from ferry.api.identity import Identifier
    from ferry.datamon.port import Datamon
    from ferry.gabo.delivery.broker import DeliveryBroker
    from ferry.gabo.delivery.sink import Sink
    from ferry.gabo.provisioning.access import Access
    from ferry.gabo.scaling.backlog import BacklogSource
    from ferry.gabo.service import Gabo
    from ferry.notify.secrets import SecretStore
    from ferry.styx.launchers import Launcher
    from ferry.styx.service import StyxService

T = TypeVar("T")
HookFactory = Callable[["Services"], ApplyHook]

# The topics a deployment creates (infra/*.yaml); the in-memory broker starts with them.
PLATFORM_TOPICS = ("ferry-alerts", "ferry-alerts-dead-letter", "ferry-partitions", "gabo-work-orders",
                   "gabo-close-orders")


class Lazy(Generic[T]):
    """A value given up front, or built once on first use (thread-safe)."""

    def __init__(self, build: Callable[[], T], value: T | None = None) -> None:
        self._build = build
        self._value = value
        self._lock = threading.Lock()

    def get(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
        return self._value


class Services:
    """Every port a use case needs; build with ``bootstrap``."""

    def __init__(self, settings: Settings, clock: Clock, store: DocumentStore, *,
                 publisher: Publisher | None = None, broker: DeliveryBroker | None = None,
                 sink: Sink | None = None, backlog_source: BacklogSource | None = None,
                 launcher: Launcher | None = None, datamon: Datamon | None = None,
                 secrets: SecretStore | None = None, apply_hooks: Sequence[HookFactory] | None = None,
                 identifier: Identifier | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store
        self._broker: Lazy[DeliveryBroker] = Lazy(lambda: _broker(self), broker)
        self._publisher: Lazy[Publisher] = Lazy(lambda: _publisher(self), publisher)
        self._sink: Lazy[Sink] = Lazy(lambda: _sink(self), sink)
        self._backlog: Lazy[BacklogSource] = Lazy(lambda: _backlog_source(self), backlog_source)
        self._launcher: Lazy[Launcher] = Lazy(lambda: _launcher(self), launcher)
        self._datamon: Lazy[Datamon] = Lazy(lambda: _datamon(self), datamon)
        self._identifier: Lazy[Identifier] = Lazy(lambda: _identifier(self), identifier)
        self._secrets: Lazy[SecretStore] = Lazy(lambda: _secrets(self), secrets)
        self._gabo_access: Lazy[Access] = Lazy(lambda: _gabo_access(self))  # settings are fixed: read once
        self.apply_hooks: tuple[HookFactory, ...] = tuple(APPLY_HOOKS if apply_hooks is None else apply_hooks)

    @property
    def publisher(self) -> Publisher:
        return self._publisher.get()

    @property
    def broker(self) -> DeliveryBroker:
        """Gabo's delivery broker (topics, subscriptions, pull); in memory, the publisher too."""
        return self._broker.get()

    @property
    def sink(self) -> Sink:
        return self._sink.get()

    @property
    def backlog_source(self) -> BacklogSource:
        return self._backlog.get()

    @property
    def launcher(self) -> Launcher:
        return self._launcher.get()

    @property
    def datamon(self) -> Datamon:
        """Datamon's port (land, landed) for Styx and Gabo."""
        return self._datamon.get()

    @property
    def identifier(self) -> Identifier:
        """Who calls: verified ID tokens in the cloud, X-Ferry-User and the stack's secret locally."""
        return self._identifier.get()

    @property
    def secrets(self) -> SecretStore:
        """Notification channels' secrets (Secret Manager in the cloud, env/files locally)."""
        return self._secrets.get()

    @property
    def manifests(self) -> ManifestRepository:
        return ManifestRepository(self.store)

    @property
    def authorizer(self) -> Authorizer:
        import os

        first = [a.strip() for a in os.environ.get("FERRY_ADMINS", "").split(",") if a.strip()]
        return Authorizer(self.manifests, self.settings.admin_team, first, require_teams=self.settings.require_teams)

    @property
    def gabo(self) -> Gabo:
        """Gabo's facade on this root's ports (cheap: the adapters are the root's, each built once)."""
        from ferry.gabo.service import Gabo
        from ferry.gabo.tables.bigquery import from_settings as tables_from

        return Gabo(store=self.store, publisher=self.publisher, broker=self.broker, sink=self.sink,
                    backlog_source=self.backlog_source, datamon=self.datamon, clock=self.clock,
                    project=self.settings.project, access=self._gabo_access.get(),
                    tables=tables_from(self.settings))

    @property
    def styx(self) -> StyxService:
        """Styx's service on this root's store, launcher, Datamon port and authorizer."""
        from ferry.styx.service import StyxService

        return StyxService(self.store, self.launcher, self.datamon, self.authorizer, self.publisher)

    @property
    def apply(self) -> ApplyService:
        return ApplyService(self.manifests, self.authorizer, [f(self) for f in self.apply_hooks])


def bootstrap(settings: Settings | None = None, *, clock: Clock | None = None, store: DocumentStore | None = None,
              publisher: Publisher | None = None, broker: DeliveryBroker | None = None, sink: Sink | None = None,
              backlog_source: BacklogSource | None = None, launcher: Launcher | None = None,
              datamon: Datamon | None = None, secrets: SecretStore | None = None,
              apply_hooks: Sequence[HookFactory] | None = None, identifier: Identifier | None = None) -> Services:
    """The services ``settings`` (default: from the environment) name, with any adapter overridden.

    In memory (``broker="memory"``) one ``MemoryBroker`` is both the publisher and Gabo's broker, unless
    one of them is given (a given broker that can publish also publishes).
    """
    settings = settings or Settings()
    clock = clock or SystemClock()
    if store is None:
        store = _store(settings)
    if settings.broker == "memory" and broker is None and publisher is None:
        from ferry.gabo.delivery.broker import MemoryBroker

        broker = MemoryBroker(clock)
        for topic in PLATFORM_TOPICS:
            broker.ensure_topic(topic)
    if publisher is None and broker is not None and hasattr(broker, "publish"):
        publisher = cast(Publisher, broker)  # the in-memory broker publishes too
    return Services(settings, clock, store, publisher=publisher, broker=broker, sink=sink,
                    backlog_source=backlog_source, launcher=launcher, datamon=datamon, secrets=secrets,
                    apply_hooks=apply_hooks, identifier=identifier)


def in_memory(clock: Clock | None = None, settings: Settings | None = None, **overrides: object) -> Services:
    """Services on the in-memory store and broker (unit tests)."""
    from dataclasses import replace

    settings = replace(settings, store="memory", broker="memory") if settings else Settings(store="memory",
                                                                                              broker="memory")
    return bootstrap(settings, clock=clock, **overrides)  # type: ignore[arg-type]


# -- the adapters each setting names (imported only when chosen) -----------------------------------

def _store(settings: Settings) -> DocumentStore:
    if settings.store == "memory":
        from ferry.store.memory import MemoryStore

        return MemoryStore()
    if settings.store == "firestore":  # the emulator when FIRESTORE_EMULATOR_HOST is set
        from ferry.store.firestore import FirestoreStore

        return FirestoreStore(settings.project)
    raise ValueError(f"unknown store {settings.store!r} (FERRY_STORE): use firestore or memory")


def _publisher(services: Services) -> Publisher:
    if services.settings.broker == "memory":
        return cast(Publisher, services.broker)  # MemoryBroker publishes
    from ferry.broker.pubsub import PubSubPublisher

    return PubSubPublisher(services.settings.project)


def _broker(services: Services) -> DeliveryBroker:
    if services.settings.broker == "memory":
        from ferry.gabo.delivery.broker import MemoryBroker

        return MemoryBroker(services.clock)
    if services.settings.broker == "pubsub":  # the emulator when PUBSUB_EMULATOR_HOST is set
        from ferry.gabo.delivery.broker import PubSubBroker

        return PubSubBroker(services.settings.project)
    raise ValueError(f"unknown broker {services.settings.broker!r} (FERRY_BROKER): use pubsub or memory")


def _sink(services: Services) -> Sink:
    from ferry.gabo.delivery.sink import open_sink

    return open_sink(services.settings.sink)


def _backlog_source(services: Services) -> BacklogSource:
    from ferry.gabo.scaling.backlog import open_backlog
    from ferry.gabo.state import GaboState

    return open_backlog(services.settings.backlog, GaboState(services.store), services.settings.project)


def _launcher(services: Services) -> Launcher:
    # Explicit everywhere: the deploy plan sets FERRY_LAUNCHER=cloudrun on every function
    # (cloud_env, infra/core.yaml) and the local stack always sets local.
    kind = services.settings.launcher
    if kind == "local":
        from ferry.styx.launchers.local import LocalLauncher

        return LocalLauncher(services.settings.log_dir)
    if kind == "cloudrun":
        from ferry.styx.launchers.cloudrun import CloudRunLauncher
        from ferry.styx.repository import StyxRepository
        from ferry.styx.slots import ApiTokens

        s = services.settings
        if s.styx_max_active > s.cloudrun_max_running:
            raise ValueError(f"FERRY_STYX_MAX_ACTIVE={s.styx_max_active} is more than Cloud Run runs at once in "
                             f"the region (FERRY_CLOUDRUN_MAX_RUNNING={s.cloudrun_max_running})")
        if s.cloudrun_idle_grace_s < s.styx_submission_lost_s + 120:
            # a job evicted before a lost submission is looked for would make find() miss its execution
            raise ValueError(f"FERRY_CLOUDRUN_IDLE_GRACE_S={s.cloudrun_idle_grace_s} must exceed the lost-submission "
                             f"window (FERRY_STYX_SUBMISSION_LOST_S={s.styx_submission_lost_s}) by two ticks (120 s)")
        # CreateJob and DeleteJob take tokens of a per-minute pool every tick shares (RunJob: the dequeue's)
        tokens = ApiTokens(StyxRepository(services.store), s.cloudrun_write_rate, services.clock)
        return CloudRunLauncher(s.project, s.region, max_jobs=s.cloudrun_max_jobs,
                                idle_grace=float(s.cloudrun_idle_grace_s), quota=tokens.take)
    raise ValueError(f"unknown launcher {kind!r} (FERRY_LAUNCHER): use local or cloudrun")


def _gabo_access(services: Services) -> Access:
    from ferry.gabo.provisioning.access import Access

    return Access.from_settings(services.settings)


def _secrets(services: Services) -> SecretStore:
    from ferry.notify.secrets import secrets_for

    return secrets_for(services.settings.secrets)


def _datamon(services: Services) -> Datamon:
    from ferry.datamon.inprocess import Landings

    return Landings(services.store, lambda: services.authorizer)


# -- the apply hooks, in the order they run ---------------------------------------------------------

def _identifier(services: Services) -> Identifier:
    import os

    from ferry.api.identity import Identifier, IdentityConfig

    env = dict(os.environ)
    env["FERRY_IDENTITY"] = services.settings.identity or env.get("FERRY_IDENTITY", "")
    return Identifier(IdentityConfig.from_env(env))


def _gabo_hook(services: Services) -> ApplyHook:
    from ferry.gabo.provisioning.access import Access
    from ferry.gabo.provisioning.provision import GaboApplyHook
    from ferry.gabo.tables.bigquery import from_settings as tables_from

    return GaboApplyHook(services.store, lambda: services.broker, Access.from_settings(services.settings),
                         lambda: services.gabo, lambda: tables_from(services.settings))


def _datamon_hook(services: Services) -> ApplyHook:
    from ferry.datamon.hooks import DatamonApplyHook

    return DatamonApplyHook()


def _styx_hook(services: Services) -> ApplyHook:
    from ferry.styx.hooks import StyxApplyHook

    return StyxApplyHook(services.settings.styx_smear_s, lambda: services.styx)


APPLY_HOOKS: tuple[HookFactory, ...] = (_gabo_hook, _datamon_hook, _styx_hook)


# -- the process-wide services ----------------------------------------------------------------------

_process: Services | None = None
_process_lock = threading.Lock()


def process_services() -> Services:
    """This process's services, built from the environment on first use (functions reuse them)."""
    global _process
    with _process_lock:
        if _process is None:
            _process = bootstrap(Settings())
        return _process


def use_process_services(services: Services | None) -> None:
    """Install ``services`` as this process's (None: rebuild from the environment on next use)."""
    global _process
    with _process_lock:
        _process = services
