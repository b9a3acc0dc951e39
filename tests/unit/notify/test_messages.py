"""Bodies per channel type: PagerDuty Events v2 and Slack Block Kit validated against JSON Schemas of
the fields those APIs define, and the receiver's own checks; routing by minimum severity."""

from __future__ import annotations

import json

import jsonschema
import pytest

from ferry.dev.receiver import pagerduty_errors, slack_errors
from ferry.domain.manifests import Channel, Team
from ferry.notify import messages as m

PD_EVENT = {
    "type": "object", "required": ["routing_key", "event_action", "dedup_key"],
    "properties": {
        "routing_key": {"type": "string", "minLength": 32, "maxLength": 32},
        "event_action": {"enum": ["trigger", "acknowledge", "resolve"]},
        "dedup_key": {"type": "string", "minLength": 1, "maxLength": 255},
        "payload": {"type": "object", "required": ["summary", "source", "severity"], "properties": {
            "summary": {"type": "string", "minLength": 1, "maxLength": 1024},
            "source": {"type": "string", "minLength": 1},
            "severity": {"enum": ["critical", "error", "warning", "info"]},
            "component": {"type": "string"}, "group": {"type": "string"}, "class": {"type": "string"},
            "custom_details": {"type": "object"}}},
    },
    "if": {"properties": {"event_action": {"const": "trigger"}}}, "then": {"required": ["payload"]},
}
TEXT = {"type": "object", "required": ["type", "text"], "properties": {
    "type": {"enum": ["plain_text", "mrkdwn"]}, "text": {"type": "string", "minLength": 1, "maxLength": 3000}}}
SLACK_MESSAGE = {
    "type": "object", "required": ["text", "blocks"],
    "properties": {"text": {"type": "string", "minLength": 1}, "blocks": {
        "type": "array", "minItems": 1, "maxItems": 50, "items": {"oneOf": [
            {"type": "object", "required": ["type", "text"], "additionalProperties": False, "properties": {
                "type": {"const": "header"}, "text": {"type": "object", "required": ["type", "text"], "properties": {
                    "type": {"const": "plain_text"}, "text": {"type": "string", "maxLength": 150},
                    "emoji": {"type": "boolean"}}}}},
            {"type": "object", "required": ["type"], "additionalProperties": False, "properties": {
                "type": {"const": "section"}, "text": TEXT,
                "fields": {"type": "array", "minItems": 1, "maxItems": 10, "items": {**TEXT, "properties": {
                    **TEXT["properties"], "text": {"type": "string", "minLength": 1, "maxLength": 2000}}}}}},
            {"type": "object", "required": ["type", "elements"], "additionalProperties": False, "properties": {
                "type": {"const": "context"}, "elements": {"type": "array", "minItems": 1, "maxItems": 10,
                                                           "items": TEXT}}},
        ]}}},
}


def event(action: str = "trigger", severity: str = "critical", **details: object) -> m.AlertEvent:
    msg = m.alert_message("team-a", "plays/2026-11-25", "plays 2026-11-25 is late <&>", severity=severity,  # type: ignore[arg-type]
                          action=action, kind="late-data", subject="plays",  # type: ignore[arg-type]
                          details={"transition": action, "late_partitions": 3, **details})
    return m.AlertEvent.model_validate_json(msg.data)


@pytest.mark.parametrize("action", ["trigger", "resolve"])
def test_pagerduty_body_is_an_events_v2_event(action: str) -> None:
    body = m.pagerduty_body(event(action), "K" * 32)
    jsonschema.validate(body, PD_EVENT)
    assert pagerduty_errors(body) == []
    assert body["dedup_key"] == "plays/2026-11-25" and body["event_action"] == action
    if action == "trigger":
        assert body["payload"]["severity"] == "critical" and body["payload"]["custom_details"]["late_partitions"] == 3


def test_invalid_pagerduty_events_are_caught() -> None:
    body = m.pagerduty_body(event(), "short")
    assert pagerduty_errors(body) == ["routing_key must be a 32-character integration key"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"routing_key": "K" * 32, "event_action": "trigger", "dedup_key": "x"}, PD_EVENT)
    assert "payload is required to trigger" in pagerduty_errors({"routing_key": "K" * 32, "event_action": "trigger"})


@pytest.mark.parametrize("action", ["trigger", "resolve"])
def test_slack_body_is_block_kit(action: str) -> None:
    body = m.slack_body(event(action, oldest="2026-11-20", newest="2026-11-25"))
    jsonschema.validate(body, SLACK_MESSAGE)
    assert slack_errors(body) == []
    text = json.dumps(body)
    assert "&lt;&amp;&gt;" in text and "<&>" not in text  # mrkdwn control characters escaped
    assert body["blocks"][0]["text"]["text"].startswith("Resolved" if action == "resolve" else "Late data")


def test_slack_limits_hold_for_long_text() -> None:
    long = m.AlertEvent(dedup_key="k", event_action="trigger", severity="error", summary="x" * 5000, owner="o",
                        payload={"component": "y" * 400})
    body = m.slack_body(long)
    jsonschema.validate(body, SLACK_MESSAGE)
    assert slack_errors({"blocks": [{"type": "section"}]}) == ["invalid_blocks: block 0 (section)"]


def test_webhook_body() -> None:
    body = m.webhook_body(event(), "n1", "team-a", "hook")
    assert body["schema"] == m.WEBHOOK_SCHEMA and body["id"] == "n1" and body["details"]["late_partitions"] == 3
    assert {body["event_action"], body["severity"], body["kind"], body["subject"]} == {"trigger", "critical",
                                                                                        "late-data", "plays"}


def test_routes_by_min_severity() -> None:
    chans = [Channel(name="pd", type="pagerduty", secret="env:PD", min_severity="critical"),
             Channel(name="slack", type="slack", secret="env:S", min_severity="warning"),
             Channel(name="log", type="webhook", secret="env:W", min_severity="info")]
    assert [c.name for c in m.routes(chans, event(severity="critical"))] == ["pd", "slack", "log"]
    assert [c.name for c in m.routes(chans, event(severity="warning"))] == ["slack", "log"]
    assert [c.name for c in m.routes(chans, event(severity="info"))] == ["log"]


def test_notification_id_is_the_producers_or_a_hash_of_the_body() -> None:
    msg = m.alert_message("o", "k", "s")
    assert m.notification_id_of(msg.data, msg.attributes) == msg.attributes["notification_id"]
    assert m.notification_id_of(b"x", {}) == m.notification_id_of(b"x", {}) != m.notification_id_of(b"y", {})


@pytest.mark.parametrize("secret", ["https://hooks.slack.com/services/T/B/X", "R" * 32, "env:", "projects/p/secrets/s"])
def test_a_team_manifest_never_holds_a_secret_itself(secret: str) -> None:
    with pytest.raises(ValueError, match="secret reference"):
        Team.model_validate({"metadata": {"name": "t"}, "spec": {"channels": [
            {"name": "c", "type": "slack", "secret": secret}]}})


def test_channel_names_are_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Team.model_validate({"metadata": {"name": "t"}, "spec": {"channels": [
            {"name": "c", "type": "slack", "secret": "env:A"}, {"name": "c", "type": "webhook", "secret": "env:B"}]}})
