"""A small but complete infra description: every kind of step `ferry deploy` plans."""

from __future__ import annotations

from typing import Any

SAMPLE: dict[str, Any] = {
    "service_accounts": [
        {"name": "ferry-api", "roles": ["roles/datastore.user"]},
        {"name": "ferry-worker", "roles": ["roles/datastore.user"]},
        {"name": "ferry-scheduler", "roles": []},
        {"name": "ferry-pubsub-push", "roles": []},
    ],
    "functions": [
        {"name": "api", "entry_point": "api", "service_account": "ferry-api", "concurrency": 8,
         "timeout_seconds": 120, "max_instances": 20, "env": {"FERRY_IDENTITY": "oidc"}},
        {"name": "tick", "entry_point": "tick", "service_account": "ferry-worker", "timeout_seconds": 300,
         "memory": "1Gi", "min_instances": 1},
        {"name": "deliver", "entry_point": "deliver", "trigger": "pubsub", "service_account": "ferry-worker",
         "timeout_seconds": 240,
         "pubsub": {"topic": "events", "subscription": "events-deliver", "ack_deadline_seconds": 300,
                    "max_delivery_attempts": 7, "min_backoff_seconds": 5, "max_backoff_seconds": 120}},
    ],
    "topics": [{"name": "events", "retention": "P1D"}, {"name": "ferry-dead-letter"},
               {"name": "alerts", "publishers": ["ferry-api"]}],
    "subscriptions": [{"name": "alerts-audit", "topic": "alerts", "ack_deadline_seconds": 30, "retention": "P3D",
                       "dead_letter_topic": "ferry-dead-letter", "max_delivery_attempts": 10}],
    "scheduler_jobs": [{"name": "styx-tick", "schedule": "* * * * *", "time_zone": "Europe/Stockholm",
                        "function": "tick", "path": "/tick", "body": {"source": "scheduler"},
                        "attempt_deadline_seconds": 320}],
    "indexes": [{"collection": "instances", "fields": [{"field": "state"}, {"field": "due_at"}]}],
    "admins": ["admin@example.com"],
}

# The same with people in browsers: a load balancer and Identity-Aware Proxy in front of the api.
SAMPLE_WEB: dict[str, Any] = {**SAMPLE, "audiences": ["764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com"],
                              "web": {"domain": "ferry.example.com", "members": ["group:ferry-users@example.com"],
                                      "functions": ["api"]}}
