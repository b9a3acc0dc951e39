"""Ownership that derived objects respect: what a manifest writes besides itself is checked too.

- The ``events.*`` endpoint namespace belongs to Gabo: an EventType may create or change
  ``events.<its name>`` only when that endpoint is absent or owned by the type's team, and a plain
  Endpoint named ``events.*`` is refused.
- ``produces`` must name an endpoint owned by the workflow's team, or one whose owner grants that team
  (``spec.producers`` of the Endpoint). Checked at apply (when the endpoint exists) and again when a
  landing is recorded (:func:`may_produce`), so a later change of the endpoint is respected too.
"""

from __future__ import annotations

from collections.abc import Sequence

from ferry.domain.manifests import Endpoint, EventType, Manifest, Workflow, event_type_of, events_endpoint
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
