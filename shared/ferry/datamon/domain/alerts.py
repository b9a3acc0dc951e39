"""Alert vocabulary: the transitions an incident is notified on, and PagerDuty severities by tier.

``incidents`` decides the transitions (one incident per endpoint); the service turns them into stored
documents and PagerDuty Events v2–shaped messages.
"""

from __future__ import annotations

import enum

from ferry.datamon.domain.sla import Level, Policy
from ferry.domain.manifests import SLA_SEVERITY


class Action(enum.StrEnum):
    TRIGGER = "trigger"
    ESCALATE = "escalate"
    RESOLVE = "resolve"
    RENOTIFY = "renotify"



def pagerduty_severity(policy: Policy, lvl: Level) -> str:
    if lvl is Level.WARN or policy.severity == "info":
        return "warning" if policy.severity != "info" else "info"
    return SLA_SEVERITY.get(policy.severity, "error")
