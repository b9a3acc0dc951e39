"""Datamon's pure core: expected partitions, SLA states and alert decisions, from data and ``now``.

Nothing here reads a clock or a store. ``sla`` computes each partition's clocks and state,
``incidents`` decides an endpoint's incident transitions as typed values, and ``evaluation`` runs one endpoint's
evaluation over both. The service turns the decisions into documents and messages.
"""

from ferry.datamon.domain.alerts import Action, pagerduty_severity
from ferry.datamon.domain.evaluation import (
                                         STRIP,
                                         Entry,
                                         Outcome,
                                         Summary,
                                         current_state,
                                         evaluate_endpoint,
                                         wanted,
)
from ferry.datamon.domain.incidents import Incident, IncidentDecision, Member, decide_incident
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
    "EPOCH", "MAX_OPEN", "OPEN_STATES", "RANK", "STRIP", "Action", "Clocks", "Entry", "Incident",
    "IncidentDecision", "Level", "Member", "Outcome", "Policy", "State", "Summary", "_utc", "decide_incident",
    "business_instant", "clocks", "current_state", "ended", "evaluate_endpoint", "expected",
    "first_expected", "level", "next_transition", "overlaps", "pagerduty_severity", "parse_partition",
    "state", "wanted", "worst",
]
