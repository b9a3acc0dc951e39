"""Notifier over in-memory fakes: routing, idempotent deliveries, retries by redelivery, dead letters."""

from __future__ import annotations

import json

import pytest

from ferry.bootstrap import Services
from ferry.notify import messages as m
from ferry.notify.port import CHANNELS, failing_channels
from ferry.notify.service import (
    DEAD_LETTER_TOPIC,
    DELIVERIES,
    DeliveryPending,
    Notifier,
)

from .conftest import PD_URL, ROUTING_KEY, Script, apply, team

HOOK = "https://hooks.example.test/ferry"
SLACK = "https://hooks.slack.test/services/T/B/X"


def channels(svc: Services) -> None:
    apply(svc, team("team-a",
                    {"name": "pager", "type": "pagerduty", "secret": "env:FERRY_SECRET_TEAM_A__PD", "min_severity": "critical"},
                    {"name": "chat", "type": "slack", "secret": "env:FERRY_SECRET_TEAM_A__SLACK", "min_severity": "warning"},
                    {"name": "hook", "type": "webhook", "secret": "env:FERRY_SECRET_TEAM_A__HOOK", "min_severity": "info"}))


def late(severity: str = "critical", action: str = "trigger") -> tuple[bytes, dict[str, str]]:
    msg = m.alert_message("team-a", "plays", "plays: 3 partitions late", severity=severity,  # type: ignore[arg-type]
                          action=action, kind="late-data", subject="plays",  # type: ignore[arg-type]
                          notification_id=f"plays#{action}-{severity}")
    return msg.data, msg.attributes


def test_delivers_to_every_channel_its_severity_reaches(svc: Services, notifier: Notifier, script: Script) -> None:
    channels(svc)
    result = notifier.handle(*late("critical"))
    assert result["channels"] == {"pager": "delivered", "chat": "delivered", "hook": "delivered"}
    pd = json.loads(script.to(PD_URL)[0].content)
    assert pd["routing_key"] == ROUTING_KEY and pd["dedup_key"] == "plays" and pd["payload"]["severity"] == "critical"
    assert json.loads(script.to(SLACK)[0].content)["blocks"][0]["type"] == "header"
    hook = script.to(HOOK)[0]
    assert json.loads(hook.content)["id"] == "plays#trigger-critical"
    assert hook.headers["Idempotency-Key"] == "plays#trigger-critical~hook"
    warning = notifier.handle(*late("warning"))
    assert sorted(warning["channels"]) == ["chat", "hook"]


def test_a_redelivered_message_posts_nothing_again(svc: Services, notifier: Notifier, script: Script) -> None:
    channels(svc)
    notifier.handle(*late())
    again = notifier.handle(*late())
    assert again["channels"] == {"pager": "duplicate", "chat": "duplicate", "hook": "duplicate"}
    assert len(script.requests) == 3


def test_a_failing_channel_is_retried_by_redelivery_without_reposting_the_others(
        svc: Services, notifier: Notifier, script: Script) -> None:
    channels(svc)
    script.statuses[HOOK] = [500, 500, 500]  # one call's three tries
    with pytest.raises(DeliveryPending):
        notifier.handle(*late())
    assert failing_channels(svc.store)[0]["channel"] == "hook"
    again = notifier.handle(*late())  # Pub/Sub's redelivery
    assert again["channels"] == {"pager": "duplicate", "chat": "duplicate", "hook": "delivered"}
    assert len(script.to(HOOK)) == 4 and len(script.to(PD_URL)) == 1
    assert failing_channels(svc.store) == []
    assert svc.store.get(DELIVERIES, "plays#trigger-critical~team-a:hook")["attempts"] == 2  # type: ignore[index]


def test_a_channel_failing_max_attempts_times_is_dead_lettered(svc: Services, notifier: Notifier,
                                                              script: Script) -> None:
    channels(svc)
    script.statuses[HOOK] = [500] * 100
    for _ in range(notifier.max_attempts - 1):
        with pytest.raises(DeliveryPending):
            notifier.handle(*late())
    last = notifier.handle(*late())
    assert last["channels"]["hook"] == "dead_lettered"
    dead = svc.broker.take(DEAD_LETTER_TOPIC)  # type: ignore[attr-defined]
    assert len(dead) == 1 and dead[0].attributes["channel"] == "team-a:hook"
    assert dead[0].attributes["attempts"] == str(notifier.max_attempts) and "500" in dead[0].attributes["error"]
    assert [c["channel"] for c in failing_channels(svc.store)] == ["hook"]
    assert notifier.handle(*late())["channels"]["hook"] == "duplicate"  # dead is final: no more posts
    assert len(script.to(HOOK)) == 3 * notifier.max_attempts


def test_a_permanent_refusal_is_dead_lettered_at_once(svc: Services, notifier: Notifier, script: Script) -> None:
    channels(svc)
    script.statuses[SLACK] = [404]
    assert notifier.handle(*late())["channels"]["chat"] == "dead_lettered"
    assert len(svc.broker.take(DEAD_LETTER_TOPIC)) == 1  # type: ignore[attr-defined]


def test_a_missing_secret_fails_the_channel_not_the_others(svc: Services, notifier: Notifier) -> None:
    apply(svc, team("team-a", {"name": "hook", "type": "webhook", "secret": "env:FERRY_SECRET_TEAM_A__NOPE", "min_severity": "info"},
                    {"name": "chat", "type": "slack", "secret": "env:FERRY_SECRET_TEAM_A__SLACK"}))
    with pytest.raises(DeliveryPending):
        notifier.handle(*late())
    [row] = failing_channels(svc.store)
    assert row["channel"] == "hook" and "FERRY_SECRET_TEAM_A__NOPE is not set" in row["last_error"]


def test_unroutable_notifications_are_dead_lettered_and_visible(svc: Services, notifier: Notifier) -> None:
    assert notifier.handle(*late())["outcome"] == "unrouted"
    assert len(svc.broker.take(DEAD_LETTER_TOPIC)) == 1  # type: ignore[attr-defined]
    assert svc.store.get(CHANNELS, "team-a:-")["failing"] is True  # type: ignore[index]
    assert notifier.handle(b"not json", {})["outcome"] == "malformed"
    assert len(svc.broker.take(DEAD_LETTER_TOPIC)) == 1  # type: ignore[attr-defined]


def test_a_fresh_claim_elsewhere_makes_this_call_nack(svc: Services, notifier: Notifier, script: Script) -> None:
    channels(svc)
    from ferry.store.base import Op

    svc.store.write([Op.create(DELIVERIES, "plays#trigger-critical~team-a:hook",
                               {"status": "sending", "attempts": 1, "claimed_at": svc.clock.now()})])
    with pytest.raises(DeliveryPending):
        notifier.handle(*late())
    assert script.to(HOOK) == []


def test_the_composition_root_builds_the_secret_store_and_notifier_settings_name() -> None:
    from ferry.bootstrap import bootstrap
    from ferry.config import Settings
    from ferry.notify.secrets import CachedSecrets, LocalSecrets, SecretManagerSecrets
    from ferry.notify.service import notifier

    local = bootstrap(Settings(store="memory", broker="memory", secrets="local"))
    assert isinstance(local.secrets, CachedSecrets) and isinstance(local.secrets.inner, LocalSecrets)
    cloud = bootstrap(Settings(store="memory", broker="memory", secrets="secretmanager",
                               pagerduty_url="https://events.eu.pagerduty.com/v2/enqueue", notify_max_attempts=6))
    assert isinstance(cloud.secrets.inner, SecretManagerSecrets)  # type: ignore[attr-defined]
    built = notifier(cloud)
    assert built.secrets is cloud.secrets and built.pagerduty_url.startswith("https://events.eu.")
    assert built.max_attempts == 6 and notifier(cloud) is built
