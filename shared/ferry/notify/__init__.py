"""Notifications: deliver alerts to the owning team's channels (PagerDuty, Slack, webhook), once."""

from ferry.notify.messages import ALERTS_TOPIC, alert_message

__all__ = ["ALERTS_TOPIC", "alert_message"]
