"""Benchmark: 10,000 endpoints, 1% late, one evaluation, then the ``notify`` service delivering what
it published to the local channel receiver — against the Firestore emulator.

Prints notifications published and HTTP deliveries made as ratios to incidents opened (aim 1.0:
one notification and one POST per late endpoint, not one per late partition), and the delivery rate
(deliveries/s) of the notify service with 8 concurrent handlers (the function's concurrency) posting
to the receiver, claims and delivery records in Firestore.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_datamon_bench import NOW, N, _seed  # tests/bench is on sys.path (rootdir import mode)

from ferry.bootstrap import bootstrap
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.datamon import evaluation, views
from ferry.dev import emulators as emu
from ferry.dev import receiver
from ferry.domain.manifests import KINDS
from ferry.notify import alert_message
from ferry.notify.secrets import LocalSecrets
from ferry.notify.sender import HttpSender
from ferry.notify.service import Notifier

pytestmark = [pytest.mark.bench, pytest.mark.emulator]
TEAMS = 50
EXTRA = int(os.environ.get("NOTIFY_BENCH_MESSAGES", "1000"))


def test_notifications_per_incident_and_delivery_rate(emulators, project_id: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ferry.store.firestore import FirestoreStore

    svc = bootstrap(Settings(project=project_id, store="firestore", broker="memory"),
                    store=FirestoreStore(project_id), clock=FixedClock(NOW))
    publisher = svc.broker
    port = emu.free_port()
    server, sink = receiver.serve("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    try:
        teams = [KINDS["Team"].model_validate({"metadata": {"name": f"team-{t:02d}"}, "spec": {"channels": [
            {"name": "hook", "type": "webhook", "secret": f"env:FERRY_SECRET_TEAM_{t:02d}__HOOK",
             "min_severity": "info"}]}})
            for t in range(TEAMS)]
        svc.apply.apply(teams, NOW, None)  # type: ignore[arg-type]
        _, late = _seed(svc)
        t0 = time.monotonic()
        result = evaluation.evaluate(svc.store, svc.publisher, now=NOW)
        eval_s = time.monotonic() - t0
        messages = publisher.take("ferry-alerts")  # type: ignore[attr-defined]
        incidents = sum(1 for a in views.alerts(svc.store, limit=1000)["items"] if a["open"])

        notifier = Notifier(svc.store, svc.publisher, LocalSecrets(tmp_path, {f"FERRY_SECRET_TEAM_{t:02d}__HOOK": f"{url}/webhook/bench"
                                                                  for t in range(TEAMS)}),
                            svc.clock, HttpSender())

        def deliver(batch: list) -> float:  # type: ignore[type-arg]
            t = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda m: notifier.handle(m.data, m.attributes), batch))
            return time.monotonic() - t

        deliver_s = deliver(messages)
        posts = len(sink.listing("/webhook/bench"))
        again_s = deliver(messages)  # Pub/Sub redelivering everything: no second POST
        reposts = len(sink.listing("/webhook/bench")) - posts
        extra = [alert_message(f"team-{i % TEAMS:02d}", f"bench-{i}", f"synthetic alert {i}", severity="error",
                               notification_id=f"bench-{i}") for i in range(EXTRA)]
        extra_s = deliver(extra)
        print(f"\n[notify bench] {N} endpoints, {late} late: one evaluation in {eval_s:.1f}s opened {incidents} "
              f"incidents, published {len(messages)} notifications (ratio {len(messages) / max(incidents, 1):.2f}); "
              f"notify made {posts} HTTP deliveries in {deliver_s:.2f}s (ratio {posts / max(incidents, 1):.2f}); "
              f"redelivery of all of them: {reposts} posts in {again_s:.2f}s")
        print(f"[notify bench] {EXTRA} more notifications: {EXTRA / extra_s:.0f} deliveries/s "
              f"(8 concurrent handlers, claims + delivery records in the Firestore emulator, receiver in-process)")
        print(json.dumps({"incidents": incidents, "published": len(messages), "deliveries": posts,
                          "redelivery_posts": reposts, "deliveries_per_s": round(EXTRA / extra_s, 1),
                          "evaluation": {k: result[k] for k in ("reads", "writes", "duration_ms")}}))
        assert incidents == late and len(messages) == incidents and posts == incidents and reposts == 0
        assert len(sink.listing("/webhook/bench")) == posts + EXTRA
    finally:
        server.shutdown()
