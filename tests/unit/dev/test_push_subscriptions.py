"""Issue 23, finding 3: one builder makes every push subscription, and none it makes is refused.

After the Pub/Sub emulator was killed, `ferry dev up`'s repair re-provisioned the push subscriptions with
an empty ``ferry_secret`` and the scale tick's reconcile built endpoints with no secret at all: every push
was refused 401, for good. (The kill-and-repair run itself: tests/e2e/test_push_repair.py.)
"""

from __future__ import annotations

import pytest

from ferry.errors import InfraError
from ferry.gabo.delivery.broker import MemoryBroker
from ferry.gabo.provisioning.reconcile import reconcile
from ferry.infra import model
from ferry.infra.pubsub import push_config_matches, push_subscription_request

INFRA = model.load()
URLS = {fn.name: f"http://127.0.0.1:{9000 + i}" for i, fn in enumerate(INFRA.functions)}
PUSHED = list(INFRA.push_subscriptions())


def test_a_push_subscription_without_credentials_cannot_be_built() -> None:
    fn, trig = PUSHED[0]
    with pytest.raises(InfraError, match="exactly one"):
        push_subscription_request(trig, "p", URLS[fn.name])  # what the repair built: no secret
    with pytest.raises(InfraError):
        push_subscription_request(trig, "p", URLS[fn.name], secret="")
    with pytest.raises(InfraError):
        push_subscription_request(trig, "p", URLS[fn.name], secret="s", oidc_account="a@p.iam.gserviceaccount.com")


def test_local_and_cloud_push_subscriptions_differ_only_in_how_they_authenticate() -> None:
    for fn, trig in PUSHED:
        local = push_subscription_request(trig, "p", URLS[fn.name], secret="s3cret")
        cloud = push_subscription_request(trig, "p", URLS[fn.name], oidc_account="push@p.iam.gserviceaccount.com")
        assert local["push_config"] == {
            "push_endpoint": f"{URLS[fn.name]}/projects/p/topics/{trig.topic}?ferry_secret=s3cret"}
        assert cloud["push_config"] == {"push_endpoint": URLS[fn.name], "oidc_token": {
            "service_account_email": "push@p.iam.gserviceaccount.com", "audience": URLS[fn.name]}}
        assert {k: v for k, v in local.items() if k != "push_config"} == \
            {k: v for k, v in cloud.items() if k != "push_config"}
        assert local["dead_letter_policy"]["dead_letter_topic"] == f"projects/p/topics/{trig.dead_letter_topic}"


def test_the_reconcile_builds_push_subscriptions_with_the_stacks_secret() -> None:
    broker = MemoryBroker()
    out = reconcile(broker, INFRA, [], URLS, "p", secret="s3cret")
    for _, trig in PUSHED:
        assert trig.subscription in out.subscriptions
        assert broker.push_configs[trig.subscription]["push_endpoint"].endswith("?ferry_secret=s3cret")
    assert reconcile(broker, INFRA, [], URLS, "p", secret="s3cret").subscriptions == []  # idempotent


def test_the_reconcile_corrects_a_push_subscription_that_lost_its_secret() -> None:
    broker = MemoryBroker()
    reconcile(broker, INFRA, [], URLS, "p", secret="s3cret")
    fn, trig = PUSHED[0]
    broker.push_configs[trig.subscription] = {"push_endpoint": f"{URLS[fn.name]}/projects/p/topics/{trig.topic}"
                                                               "?ferry_secret="}  # what the old repair left
    out = reconcile(broker, INFRA, [], URLS, "p", secret="s3cret")
    assert out.subscriptions == [trig.subscription]
    assert broker.push_configs[trig.subscription]["push_endpoint"].endswith("?ferry_secret=s3cret")


def test_push_config_matches_compares_endpoint_and_oidc() -> None:
    class Token:
        service_account_email, audience = "push@p.iam.gserviceaccount.com", "https://f"

    class Have:
        push_endpoint, oidc_token = "https://f", Token()

    want = {"push_endpoint": "https://f", "oidc_token": {"service_account_email": "push@p.iam.gserviceaccount.com",
                                                         "audience": "https://f"}}
    assert push_config_matches(Have(), want)
    assert not push_config_matches(Have(), {**want, "oidc_token": {**want["oidc_token"], "audience": "https://g"}})
    assert not push_config_matches(Have(), {"push_endpoint": "https://f"})
