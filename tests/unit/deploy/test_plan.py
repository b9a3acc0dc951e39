from __future__ import annotations

import json
from pathlib import Path

from ferry.deploy import plan
from ferry.deploy.planning import function_url, source_digest
from ferry.infra.model import Infra, load

P, R = "proj-1", "europe-west1"


def _by(steps, kind):
    return {s.name: s for s in steps if s.kind == kind}


def _flags(argv):
    return dict((a[2:].split("=", 1) + [""])[:2] for a in argv if a.startswith("--"))


def test_steps_come_in_dependency_order(infra: Infra, tmp_path: Path) -> None:
    steps = plan(infra, P, R, tmp_path)
    first = {}
    last = {}
    for i, s in enumerate(steps):
        key = "invoker" if s.kind == "iam" and ":invoker:" in s.name else s.kind
        first.setdefault(key, i)
        last[key] = i
    assert steps[0].kind == "apis"
    assert last["service_account"] < first["iam"]
    assert last["index"] < first["topic"]
    assert last["topic"] < first["subscription"] < first["function"]
    assert last["function"] < first["invoker"] <= last["invoker"] < first["push_subscription"]
    assert last["push_subscription"] < first["scheduler_job"] == len(steps) - 1
    assert len({(s.kind, s.name) for s in steps}) == len(steps)


def test_function_is_deployed_gen2_from_the_bundle_with_every_setting(infra: Infra, tmp_path: Path) -> None:
    fn = _by(plan(infra, P, R, tmp_path / "bundle"), "function")["deliver"]
    argv = fn.request
    assert argv[:5] == ["gcloud", "functions", "deploy", "deliver", "--gen2"]
    f = _flags(argv)
    assert f["runtime"] == "python312"
    assert f["source"] == str(tmp_path / "bundle")
    assert f["entry-point"] == "deliver"
    assert "trigger-http" in f and "no-allow-unauthenticated" in f and "allow-unauthenticated" not in f
    assert (f["memory"], f["cpu"], f["timeout"]) == ("512Mi", "1", "240s")
    assert (f["min-instances"], f["max-instances"], f["concurrency"]) == ("0", "10", "1")
    assert f["service-account"] == f"ferry-worker@{P}.iam.gserviceaccount.com"
    assert f["ingress-settings"] == "internal-only"  # no person calls it
    assert f["project"] == P and f["region"] == R
    assert "GOOGLE_CLOUD_PROJECT=proj-1" in f["set-env-vars"]
    api = _flags(_by(plan(infra, P, R, tmp_path), "function")["api"].request)
    assert api["set-env-vars"].split(",") == ["FERRY_ADMINS=admin@example.com",
                                              f"FERRY_AUDIENCES=https://{R}-{P}.cloudfunctions.net/api",
                                              "FERRY_FUNCTION=api", "FERRY_IDENTITY=oidc",
                                              "FERRY_PUBSUB_AGENT=serviceAccount:service-PROJECT_NUMBER"
                                              "@gcp-sa-pubsub.iam.gserviceaccount.com",
                                              "FERRY_REGION=europe-west1", "FERRY_TIMEOUT_S=120",
                                              "GOOGLE_CLOUD_PROJECT=proj-1"]
    assert api["concurrency"] == "8" and api["max-instances"] == "20"
    tick = _flags(_by(plan(infra, P, R, tmp_path), "function")["tick"].request)
    assert tick["min-instances"] == "1" and tick["memory"] == "1Gi"


def test_each_function_runs_as_its_own_account_and_only_callers_may_invoke(infra: Infra, tmp_path: Path) -> None:
    steps = plan(infra, P, R, tmp_path)
    invokers = {(s.request[4], s.expect["member"]) for s in steps if s.kind == "iam" and ":invoker:" in s.name}
    assert invokers == {("tick", f"serviceAccount:ferry-scheduler@{P}.iam.gserviceaccount.com"),
                        ("deliver", f"serviceAccount:ferry-pubsub-push@{P}.iam.gserviceaccount.com")}
    assert all(s.expect["role"] == "roles/run.invoker" for s in steps if ":invoker:" in s.name)
    project_roles = {(s.expect["member"], s.expect["role"]) for s in steps
                     if s.kind == "iam" and s.request[1:3] == ["projects", "add-iam-policy-binding"]}
    assert project_roles == {
        (f"serviceAccount:ferry-api@{P}.iam.gserviceaccount.com", "roles/datastore.user"),
        (f"serviceAccount:ferry-worker@{P}.iam.gserviceaccount.com", "roles/datastore.user"),
    }
    topic_roles = {(s.request[4], s.expect["member"], s.expect["role"]) for s in steps
                   if s.kind == "iam" and s.request[1:4] == ["pubsub", "topics", "add-iam-policy-binding"]
                   and "ferry-api" in s.expect["member"]}
    assert topic_roles == {("alerts", f"serviceAccount:ferry-api@{P}.iam.gserviceaccount.com",
                            "roles/pubsub.publisher")}  # on its topic only


def test_push_subscription_carries_oidc_dead_letters_and_retry(infra: Infra, tmp_path: Path) -> None:
    urls = {"deliver": "https://deliver-abc-ew.a.run.app"}
    sub = _by(plan(infra, P, R, tmp_path, urls=urls, project_number="42"), "push_subscription")["events-deliver"]
    assert sub.needs_urls
    assert sub.request == {
        "name": f"projects/{P}/subscriptions/events-deliver",
        "topic": f"projects/{P}/topics/events",
        "ack_deadline_seconds": 300,
        "message_retention_duration": {"seconds": 7 * 86400},
        # the token's audience is the function's configured one (its FERRY_AUDIENCES), not its run.app host
        "push_config": {"push_endpoint": urls["deliver"],
                        "oidc_token": {"service_account_email": f"ferry-pubsub-push@{P}.iam.gserviceaccount.com",
                                       "audience": function_url(P, R, "deliver")}},
        "dead_letter_policy": {"dead_letter_topic": f"projects/{P}/topics/ferry-dead-letter",
                               "max_delivery_attempts": 7},
        "retry_policy": {"minimum_backoff": {"seconds": 5}, "maximum_backoff": {"seconds": 120}},
        "expiration_policy": {},
    }


def test_dead_lettering_grants_the_pubsub_service_agent(infra: Infra, tmp_path: Path) -> None:
    steps = plan(infra, P, R, tmp_path, project_number="42")
    agent = "serviceAccount:service-42@gcp-sa-pubsub.iam.gserviceaccount.com"
    grants = {(tuple(s.request[1:5]), s.expect["role"])
              for s in steps if s.kind == "iam" and s.expect["member"] == agent}
    assert grants == {
        (("pubsub", "topics", "add-iam-policy-binding", "ferry-dead-letter"), "roles/pubsub.publisher"),
        (("pubsub", "subscriptions", "add-iam-policy-binding", "alerts-audit"), "roles/pubsub.subscriber"),
        (("pubsub", "subscriptions", "add-iam-policy-binding", "events-deliver"), "roles/pubsub.subscriber"),
        (("iam", "service-accounts", "add-iam-policy-binding", f"ferry-pubsub-push@{P}.iam.gserviceaccount.com"),
         "roles/iam.serviceAccountTokenCreator"),
    }
    names = [s.name for s in steps]
    # the subscriber grant needs its subscription to exist first
    assert names.index("alerts-audit") < names.index("alerts-audit:subscriber")
    assert names.index("events-deliver") < names.index("events-deliver:subscriber")


def test_pull_subscription_and_topic_requests(infra: Infra, tmp_path: Path) -> None:
    steps = plan(infra, P, R, tmp_path)
    assert _by(steps, "topic")["events"].request == {"name": f"projects/{P}/topics/events",
                                                     "message_retention_duration": {"seconds": 86400}}
    sub = _by(steps, "subscription")["alerts-audit"].request
    assert sub["ack_deadline_seconds"] == 30
    assert sub["message_retention_duration"] == {"seconds": 3 * 86400}
    assert sub["dead_letter_policy"] == {"dead_letter_topic": f"projects/{P}/topics/ferry-dead-letter",
                                         "max_delivery_attempts": 10}
    assert "push_config" not in sub


def test_scheduler_job_posts_json_with_an_oidc_token(infra: Infra, tmp_path: Path) -> None:
    job = _by(plan(infra, P, R, tmp_path), "scheduler_job")["styx-tick"]
    url = function_url(P, R, "tick")
    assert job.request["parent"] == f"projects/{P}/locations/{R}"
    j = job.request["job"]
    assert j["name"] == f"projects/{P}/locations/{R}/jobs/styx-tick"
    assert (j["schedule"], j["time_zone"]) == ("* * * * *", "Europe/Stockholm")
    assert j["attempt_deadline"] == {"seconds": 320}
    t = j["http_target"]
    assert t["uri"] == url + "/tick" and t["http_method"] == "POST"
    assert json.loads(t["body"]) == {"source": "scheduler"}
    assert t["headers"] == {"Content-Type": "application/json"}
    assert t["oidc_token"] == {"service_account_email": f"ferry-scheduler@{P}.iam.gserviceaccount.com",
                               "audience": url}


def test_indexes_are_planned_for_the_firestore_admin_api(infra: Infra, tmp_path: Path) -> None:
    ix = _by(plan(infra, P, R, tmp_path), "index")
    (step,) = ix.values()
    assert step.via == "firestore_admin"
    assert step.request == {"parent": f"projects/{P}/databases/(default)/collectionGroups/instances",
                            "index": {"query_scope": "COLLECTION",
                                      "fields": [{"field_path": "state", "order": "ASCENDING"},
                                                 {"field_path": "due_at", "order": "ASCENDING"}]}}


def test_the_plan_is_deterministic_and_fingerprints_the_bundle(infra: Infra, tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("x = 1\n")
    a = plan(infra, P, R, tmp_path)
    assert a == plan(infra, P, R, tmp_path)
    before = source_digest(tmp_path)
    (tmp_path / "main.py").write_text("x = 2\n")
    assert source_digest(tmp_path) != before
    b = plan(infra, P, R, tmp_path)
    changed = [x.name for x, y in zip(a, b, strict=True) if x != y]
    assert changed == ["api", "tick", "deliver"]  # only the functions redeploy


def test_the_repository_infra_plans_completely(tmp_path: Path) -> None:
    infra = load()
    steps = plan(infra, "demo", "europe-west1", tmp_path)
    assert set(_by(steps, "function")) == {f.name for f in infra.functions}
    assert set(_by(steps, "topic")) == {t.name for t in infra.topics}
    assert set(_by(steps, "push_subscription")) == {t.subscription for _, t in infra.push_subscriptions()}
    # declared pull subscriptions and a hold for every dead-letter topic (a topic nobody reads drops messages)
    assert set(_by(steps, "subscription")) == {s.name for s in infra.subscriptions} | {
        "ferry-dead-letter-hold", "ferry-alerts-dead-letter-hold"}
    jobs = _by(steps, "scheduler_job")
    assert set(jobs) == {j.name for j in infra.scheduler_jobs}
    for j in jobs.values():
        assert j.request["job"]["http_target"]["oidc_token"]["service_account_email"]
    for s in _by(steps, "push_subscription").values():
        assert s.request["dead_letter_policy"]["max_delivery_attempts"] >= 5
        # the audience the function accepts (FERRY_AUDIENCES): configuration, never the request's Host
        fn = next(f for f, t in infra.push_subscriptions() if t.subscription == s.name)
        assert s.request["push_config"]["oidc_token"]["audience"] == function_url("demo", "europe-west1", fn.name)
