"""Ownership that derived objects respect: what a manifest writes besides itself is checked too.

- The ``events.*`` endpoint namespace belongs to Gabo: an EventType may create or change
  ``events.<its name>`` only when that endpoint is absent or owned by the type's team, and a plain
  Endpoint named ``events.*`` is refused.
- ``produces`` must name an endpoint owned by the workflow's team, or one whose owner grants that team
  (``spec.producers`` of the Endpoint). Checked at apply (when the endpoint exists) and again when a
  landing is recorded (:func:`may_produce`), so a later change of the endpoint is respected too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ferry.domain.manifests import (
    Endpoint,
    EventType,
    Manifest,
    Team,
    Workflow,
    event_type_of,
    events_endpoint,
)
from ferry.errors import Forbidden, ValidationError
from ferry.store.manifests import ManifestRepository


def may_produce(endpoint: Endpoint, team: str) -> bool:
    """Whether a workflow owned by ``team`` may record landings of ``endpoint``."""
    return endpoint.metadata.owner == team or team in endpoint.spec.producers


def check(manifests: Sequence[Manifest], repo: ManifestRepository) -> None:
    """Raise ValidationError for a plain ``events.*`` Endpoint, Forbidden for a derived object that
    would change what another team owns. Reads only the endpoints the manifests name."""
    reserved = [(i, m) for i, m in enumerate(manifests) if isinstance(m, Endpoint) and event_type_of(m.name)]
    if reserved:
        raise ValidationError("the events.* endpoints belong to Gabo: apply an EventType instead", [
            {"index": i, "kind": m.kind, "name": m.name, "field": "metadata.name",
             "reason": f"endpoint {m.name} is registered by EventType {event_type_of(m.name)}"}
            for i, m in reserved])
    declared = {m.name: m for m in manifests if isinstance(m, Endpoint)}
    wanted = {events_endpoint(m.name) for m in manifests if isinstance(m, EventType)}
    wanted |= {m.spec.produces for m in manifests if isinstance(m, Workflow) and m.spec.produces} - set(declared)
    stored = repo.get_many("Endpoint", sorted(wanted)) if wanted else {}
    endpoints: dict[str, Endpoint] = {n: r.model_as(Endpoint) for n, r in stored.items()}
    endpoints.update(declared)
    for m in manifests:
        if isinstance(m, EventType):
            ep = endpoints.get(events_endpoint(m.name))
            if ep is not None and ep.metadata.owner != m.metadata.owner:
                raise Forbidden(f"EventType {m.name} (owner {m.metadata.owner}) may not take over endpoint "
                                f"{ep.name}: it is owned by {ep.metadata.owner}",
                                {"kind": m.kind, "name": m.name, "field": "metadata.owner",
                                 "endpoint": ep.name, "endpoint_owner": ep.metadata.owner})
        elif isinstance(m, Workflow) and m.spec.produces:
            ep = endpoints.get(m.spec.produces)
            if ep is not None and not may_produce(ep, m.metadata.owner):
                raise Forbidden(f"Workflow {m.name} (owner {m.metadata.owner}) may not produce {ep.name}: it is "
                                f"owned by {ep.metadata.owner}, who has not granted it (spec.producers)",
                                {"kind": m.kind, "name": m.name, "field": "spec.produces",
                                 "endpoint": ep.name, "endpoint_owner": ep.metadata.owner})


def runner_accounts() -> list[str]:
    """The accounts this deployment lets Styx run workflows as (FERRY_RUNNER_ACCOUNTS, set by the deploy
    plan from ``act_as``); empty locally, where nothing runs as a service account."""
    return [a.strip() for a in os.environ.get("FERRY_RUNNER_ACCOUNTS", "").split(",") if a.strip()]


def check_workflow_runtime(manifests: Sequence[Manifest], repo: ManifestRepository, admin_team: str,
                           runners: Sequence[str] = ()) -> None:
    """A workflow may run only as a service account its team (or the admin team, for everyone) declares
    and the deployment allows, and only an image under a prefix they declare. Without any declared
    prefix (a fresh installation) images are not restricted; a service account always must be declared."""
    workflows = [m for m in manifests if isinstance(m, Workflow)]
    if not workflows:
        return
    teams: dict[str, Team] = {m.name: m for m in manifests if isinstance(m, Team)}
    wanted = ({w.metadata.owner for w in workflows} | {admin_team}) - set(teams)
    teams.update({n: r.model_as(Team) for n, r in repo.get_many("Team", sorted(wanted)).items()})
    defaults = teams.get(admin_team)
    for w in workflows:
        declared = [t for t in (teams.get(w.metadata.owner), defaults) if t is not None]
        accounts = {a for t in declared for a in t.spec.service_accounts}
        prefixes = [p for t in declared for p in t.spec.image_prefixes]
        sa = w.spec.service_account
        if sa and (sa not in accounts or (runners and sa not in runners)):
            where = "its team nor the admins declare it" if sa not in accounts else "this deployment does not allow it"
            raise Forbidden(f"Workflow {w.name} may not run as {sa}: {where} (Team spec.service_accounts)",
                            {"kind": w.kind, "name": w.name, "field": "spec.service_account"})
        if prefixes and not any(w.spec.image.startswith(p) for p in prefixes):
            raise Forbidden(f"Workflow {w.name} may not run image {w.spec.image}: not under a prefix its team or "
                            f"the admins declare ({', '.join(prefixes)})",
                            {"kind": w.kind, "name": w.name, "field": "spec.image"})
