"""Applying manifests: validate everything, then write in batches; a dry run reports the plan.

Idempotent by construction: a manifest whose fingerprint is unchanged is not rewritten, so applying
the same files twice changes nothing (and costs reads only).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from ferry.domain.loading import Problem, duplicates, parse_document
from ferry.domain.manifests import (
    Endpoint,
    Manifest,
    Resource,
    Team,
    Workflow,
    channel_secret_problem,
    event_type_of,
    events_endpoint,
    resource_grant_problem,
)
from ferry.errors import Conflict, NotFound, ValidationError
from ferry.services import ownership
from ferry.services.authz import Authorizer
from ferry.store.base import Op
from ferry.store.manifests import ManifestRecord, ManifestRepository, collection

Action = Literal["created", "changed", "unchanged", "deleted"]


@dataclass(frozen=True)
class Change:
    manifest: Manifest
    action: Action
    record: ManifestRecord
    previous: ManifestRecord | None = None
    # the store version ``previous`` was read at: the write's precondition
    read_version: Any = field(default=None, compare=False)
    # a delete that gives up data on purpose (``--force``): hooks keep what lets it be recovered
    force: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.manifest.kind, "name": self.manifest.name, "action": self.action,
                "generation": self.record.generation}


@dataclass
class ApplyResult:
    dry_run: bool
    changes: list[Change] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"created": 0, "changed": 0, "unchanged": 0}
        for c in self.changes:
            out[c.action] = out.get(c.action, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "counts": self.counts(), "changes": [c.to_dict() for c in self.changes]}


class ApplyHook(Protocol):
    """What a subsystem adds to apply: its own checks, its own writes, its own provisioning."""

    def check(self, manifests: Sequence[Manifest], repo: ManifestRepository) -> list[Problem]:
        """Problems that make the whole apply fail (cross-object references...)."""
        ...

    def ops(self, changes: Sequence[Change], now: datetime) -> list[Op]:
        """Extra writes committed in the same batches as the manifests (derived state)."""
        ...

    def after(self, changes: Sequence[Change], now: datetime) -> None:
        """Side effects once written, for every manifest applied (unchanged ones too), so that
        provisioning converges; must be idempotent."""
        ...


DeleteMode = Literal["refuse", "drain", "force"]


@runtime_checkable
class DeleteGuard(Protocol):
    """A hook that may refuse a delete (data would be thrown away), or make it safe first."""

    def before_delete(self, record: ManifestRecord, now: datetime, actor: str | None,
                      mode: DeleteMode) -> dict[str, Any] | None:
        """``refuse``: raise Conflict (with the counts) if deleting now loses data; ``drain``: make it
        safe first (or raise); ``force``: record what is given up. Returns what it did, or None."""
        ...


class ResourceReferences:
    """A workflow may only use declared resources (in this apply or already stored) that its team owns
    or was granted (the Resource's ``spec.grants``): another team's resource is not a shared pool."""

    def check(self, manifests: Sequence[Manifest], repo: ManifestRepository) -> list[Problem]:
        declared = {m.name: m for m in manifests if isinstance(m, Resource)}
        wanted = {r for m in manifests if isinstance(m, Workflow) for r in m.spec.resources} - set(declared)
        stored = {name: rec.model() for name, rec in repo.get_many("Resource", sorted(wanted)).items()} \
            if wanted else {}
        problems = []
        for i, m in enumerate(manifests):
            if isinstance(m, Workflow):
                for j, r in enumerate(m.spec.resources):
                    res = declared.get(r) or stored.get(r)
                    if not isinstance(res, Resource):
                        problems.append(Problem("(input)", i, f"spec.resources[{j}]",
                                                f"resource {r!r} is not declared (apply a Resource named {r})",
                                                m.kind, m.name, reference=f"Resource/{r}"))
                        continue
                    if res.metadata.owner is None:
                        continue  # an unowned Resource is a pool every team shares (docs/styx.md)
                    why = resource_grant_problem(r, res.metadata.owner, res.spec.grants or [], m.metadata.owner)
                    if why:
                        problems.append(Problem("(input)", i, f"spec.resources[{j}]", why, m.kind, m.name))
        return problems

    def ops(self, changes: Sequence[Change], now: datetime) -> list[Op]:
        return []

    def after(self, changes: Sequence[Change], now: datetime) -> None:
        return None


class ChannelSecrets:
    """A Team's channels read only the team's own secrets (``domain.manifests.channel_secret_problem``:
    ``<team>--<name>``): never another team's, never the stack's own credentials."""

    def check(self, manifests: Sequence[Manifest], repo: ManifestRepository) -> list[Problem]:
        return [Problem("(input)", i, f"spec.channels[{j}].secret", why, m.kind, m.name)
                for i, m in enumerate(manifests) if isinstance(m, Team)
                for j, c in enumerate(m.spec.channels)
                for why in [channel_secret_problem(m.name, c.secret)] if why]

    def ops(self, changes: Sequence[Change], now: datetime) -> list[Op]:
        return []

    def after(self, changes: Sequence[Change], now: datetime) -> None:
        return None


class EndpointReferences:
    """``depends_on``, ``produces`` and ``upstream`` name endpoints that exist: declared in this apply
    (an EventType declares ``events.<name>``) or already stored. A typo would otherwise wait forever."""

    def check(self, manifests: Sequence[Manifest], repo: ManifestRepository) -> list[Problem]:
        declared = {m.name for m in manifests if m.kind == "Endpoint"}
        declared |= {events_endpoint(m.name) for m in manifests if m.kind == "EventType"}
        refs = [(i, m, field, name) for i, m in enumerate(manifests) for field, name in _endpoint_refs(m)]
        wanted = sorted({name for *_, name in refs} - declared)
        stored = set(repo.get_many("Endpoint", wanted)) if wanted else set()
        return [Problem("(input)", i, field, f"endpoint {name!r} does not exist (apply an Endpoint named {name}"
                        + (f", or an EventType named {event_type_of(name)}" if event_type_of(name) else "") + ")",
                        m.kind, m.name, reference=f"Endpoint/{name}")
                for i, m, field, name in refs if name not in declared and name not in stored]

    def ops(self, changes: Sequence[Change], now: datetime) -> list[Op]:
        return []

    def after(self, changes: Sequence[Change], now: datetime) -> None:
        return None


def _endpoint_refs(m: Manifest) -> list[tuple[str, str]]:
    if isinstance(m, Workflow):
        refs = [(f"spec.depends_on[{j}]", e) for j, e in enumerate(m.spec.depends_on)]
        return refs + ([("spec.produces", m.spec.produces)] if m.spec.produces else [])
    if isinstance(m, Endpoint):
        return [(f"spec.upstream[{j}]", e) for j, e in enumerate(m.spec.upstream)]
    return []


def parse_documents(docs: Sequence[Any], sources: Sequence[str] | None = None) -> list[Manifest]:
    """Validate raw documents (from an API body); every problem at once, or the manifests."""
    manifests: list[Manifest] = []
    problems: list[Problem] = []
    for i, doc in enumerate(docs):
        file = sources[i] if sources and i < len(sources) else "(request)"
        manifest, bad = parse_document(doc, file, i)
        problems.extend(bad)
        if manifest is not None:
            manifests.append(manifest)
    problems.extend(duplicates(manifests))
    if problems:
        raise ValidationError(f"{len(problems)} problem(s) in manifests; nothing was applied",
                              [p.to_dict() for p in problems])
    return manifests


class ApplyService:
    def __init__(self, repo: ManifestRepository, authorizer: Authorizer, hooks: Sequence[ApplyHook] = ()) -> None:
        self.repo = repo
        self.authorizer = authorizer
        self.hooks: list[ApplyHook] = [ResourceReferences(), ChannelSecrets(), EndpointReferences(), *hooks]

    def plan(self, manifests: Sequence[Manifest], now: datetime) -> list[Change]:
        by_kind: dict[str, list[Manifest]] = defaultdict(list)
        for m in manifests:
            by_kind[m.kind].append(m)
        existing: dict[tuple[str, str], tuple[ManifestRecord, Any]] = {}
        for kind, group in by_kind.items():
            for name, found in self.repo.get_versioned(kind, [m.name for m in group]).items():
                existing[(kind, name)] = found
        changes = []
        for m in manifests:
            prev, version = existing.get((m.kind, m.name), (None, None))
            if prev is not None and prev.fingerprint == m.fingerprint():
                changes.append(Change(m, "unchanged", prev, prev, version))
            else:
                changes.append(Change(m, "changed" if prev else "created",
                                      self.repo.record_for(m, prev, now), prev, version))
        return changes

    def _write(self, changes: Sequence[Change], now: datetime) -> None:
        """Write ``changes`` (and the hooks' derived writes), each conditional on the version it was
        read at: a create on absence, a change or delete on the update time seen by ``plan``.

        Raises:
            Conflict: another apply changed, created or deleted some of these objects since they
                were read; details name them. Nothing of the failing batch of 500 is written.
        """
        ops = [Op.delete(collection(c.record.kind), c.record.name, if_version=c.read_version)
               if c.action == "deleted" else self.repo.op_for(c.record, c.read_version) for c in changes]
        for h in self.hooks:
            ops.extend(h.ops(changes, now))
        try:
            self.repo.store.write(ops)
        except Conflict as exc:
            raced = self._raced(changes)
            names = ", ".join(f"{c['kind']} {c['name']}" for c in raced) or "(none: retry)"
            raise Conflict(f"changed by another apply since this one read them: {names}; nothing of the "
                           "conflicting batch was written — re-read and apply again", {"changed": raced}) from exc

    def _raced(self, changes: Sequence[Change]) -> list[dict[str, Any]]:
        """The objects of ``changes`` stored neither as ``plan`` read them nor as this apply wrote them
        (an earlier batch of a big apply may have landed)."""
        by_kind: dict[str, list[Change]] = defaultdict(list)
        for c in changes:
            by_kind[c.record.kind].append(c)
        raced = []
        for kind, group in by_kind.items():
            now_stored = self.repo.get_versioned(kind, [c.record.name for c in group])
            for c in group:
                current = now_stored.get(c.record.name)
                ours = current is not None and c.action != "deleted" and current[0] == c.record
                if not ours and (current[1] if current else None) != c.read_version:
                    raced.append({"kind": kind, "name": c.record.name,
                                  "generation": current[0].generation if current else None})
        return raced

    def apply(self, manifests: Sequence[Manifest], now: datetime, actor: str | None = None,
              dry_run: bool = False) -> ApplyResult:
        """Validate cross-object rules and ownership, then write every change.

        Raises:
            ValidationError: a reference or rule failed (nothing written).
            Forbidden: the actor may not change an object (nothing written).
        """
        problems = [p for h in self.hooks for p in h.check(manifests, self.repo)]
        if problems:
            raise ValidationError(f"{len(problems)} problem(s) in manifests; nothing was applied",
                                  [p.to_dict() for p in problems])
        ownership.check(manifests, self.repo)  # derived objects: events.* endpoints, produces
        ownership.check_workflow_runtime(manifests, self.repo, self.authorizer.admin_team, ownership.runner_accounts())
        changes = self.plan(manifests, now)
        moving = [c for c in changes if c.action != "unchanged"]
        self.authorizer.check_team_change(actor, [c.manifest.name for c in moving if c.manifest.kind == "Team"])
        declared_here = {m.name for m in manifests if m.kind == "Team"}
        self.authorizer.check_owners_declared([(c.manifest.kind, c.manifest.name, c.manifest.metadata.owner)
                                               for c in moving if c.manifest.metadata.owner not in declared_here],
                                              declared_here)
        owner_of = self.authorizer.owner_of
        owners = ({owner_of(c.manifest.kind, c.manifest.metadata.owner) for c in moving}
                  | {owner_of(c.previous.kind, c.previous.owner) for c in moving if c.previous})
        self.authorizer.check(actor, owners, "change")
        result = ApplyResult(dry_run=dry_run, changes=changes)
        if dry_run:
            return result
        if moving:
            self._write(moving, now)
        # Every change, unchanged ones too: provisioning converges even if a topic went missing.
        for h in self.hooks:
            h.after(changes, now)
        return result

    def delete(self, kind: str, name: str, now: datetime, actor: str | None = None,
               mode: DeleteMode = "refuse") -> ManifestRecord:
        """Delete one object, after the hooks' guards (an EventType with data not yet closed is refused
        unless ``mode`` is ``drain`` or ``force``).

        Raises:
            NotFound, Forbidden, Conflict: a guard refused, or the object changed since it was read.
        """
        rec, version = self.repo.get_versioned(kind, [name]).get(name, (None, None))
        if rec is None:
            raise NotFound(f"{kind} {name!r} not found{self.repo.did_you_mean(kind, name)}")
        if kind == "Team":
            self.authorizer.check_team_change(actor, [name])
        self.authorizer.check(actor, [self.authorizer.owner_of(kind, rec.owner)], "delete")
        done = [h.before_delete(rec, now, actor, mode) for h in self.hooks if isinstance(h, DeleteGuard)]
        if mode != "refuse" and all(d is None for d in done):
            raise ValidationError(f"--{mode} applies to an EventType only; {kind} {name!r} is deleted plainly")
        change = Change(rec.model(), "deleted", rec, rec, version, force=mode == "force")
        self._write([change], now)
        for h in self.hooks:
            h.after([change], now)
        return rec
