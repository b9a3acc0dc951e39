"""Datamon's pure core: expected partitions, SLA states and alert decisions, from data and ``now``.

Nothing here reads a clock or a store. ``sla`` computes each partition's clocks and state,
``alerts`` decides alert transitions as typed values, and ``evaluation`` runs one endpoint's
evaluation over both. The service turns the decisions into documents and messages.
"""

from ferry.datamon.domain.alerts import (
                                         Action,
                                         Decision,
                                         Notification,
                                         Notify,
                                         OpenAlert,
                                         alert_after,
                                         decide,
                                         pagerduty_severity,
                                         summary_text,
)
from ferry.datamon.domain.evaluation import (
                                         STRIP,
                                         Entry,
                                         Outcome,
                                         Summary,
                                         current_state,
                                         evaluate_endpoint,
                                         wanted,
)
from ferry.datamon.domain.sla import (
                                         EPOCH,
                                         MAX_OPEN,
                                         OPEN_STATES,
                                         RANK,
                                         Clocks,
                                         Level,
                                         Policy,
                                         State,
                                         _utc,
                                         business_instant,
                                         clocks,
                                         ended,
                                         expected,
                                         first_expected,
                                         level,
                                         next_transition,
                                         overlaps,
                                         parse_partition,
                                         state,
                                         worst,
)

__all__ = [
    "EPOCH", "MAX_OPEN", "OPEN_STATES", "RANK", "STRIP", "Action", "Clocks", "Decision", "Entry", "Level",
    "Notification", "Notify", "OpenAlert", "Outcome", "Policy", "State", "Summary", "_utc", "alert_after",
    "business_instant", "clocks", "current_state", "decide", "ended", "evaluate_endpoint", "expected",
    "first_expected", "level", "next_transition", "overlaps", "pagerduty_severity", "parse_partition",
    "state", "summary_text", "wanted", "worst",
]
