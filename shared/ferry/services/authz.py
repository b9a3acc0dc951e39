"""Ownership: a caller may change only what its team owns; admins may change everything (docs/metadata-language.md)."""

from __future__ import annotations

from collections.abc import Iterable

from ferry.domain.manifests import Team
from ferry.errors import Forbidden, Unauthenticated
from ferry.store.manifests import ManifestRepository

AS_HINT = "to act as someone else: --as USER or FERRY_USER=USER (locally); `ferry whoami` shows who you are"


def _some(team: Team, n: int = 5) -> str:
    people = list(dict.fromkeys([*team.spec.members, *team.spec.admins]))
    return ", ".join(people[:n]) + (f" and {len(people) - n} more" if len(people) > n else "") or "none"


class Authorizer:
    """Decides mutations from the Team manifests in the store.

    A team that is not declared is open: objects it owns may be changed by anyone (so a new
    installation works before any Team exists). Once declared, only its members and admins, and the
    members of the admin team, may change what it owns. ``actor`` None is Ferry itself (scheduler).
    """

    def __init__(self, manifests: ManifestRepository, admin_team: str = "admins",
                 first_admins: Iterable[str] = (), require_teams: bool = False) -> None:
        self.manifests = manifests
        self.admin_team = admin_team
        # Set at deploy time (FERRY_ADMINS): admins before the admin team exists, and the switch to
        # closed teams — creating a Team needs an admin, objects must name a declared owner.
        self.first_admins = frozenset(first_admins)
        self.require_teams = require_teams or self.closed  # owners must be declared Teams
        self._teams: dict[str, Team] | None = None

    @property
    def closed(self) -> bool:
        """Teams are closed (the cloud): set when the deployment names its first admins."""
        return bool(self.first_admins)

    def _load(self, names: Iterable[str]) -> dict[str, Team]:
        wanted = set(names) | {self.admin_team}
        records = self.manifests.get_many("Team", sorted(wanted))
        return {n: r.model_as(Team) for n, r in records.items()}

    def is_admin(self, actor: str | None, teams: dict[str, Team]) -> bool:
        if actor is not None and actor in self.first_admins:
            return True
        admins = teams.get(self.admin_team)
        return actor is not None and admins is not None and actor in (*admins.spec.members, *admins.spec.admins)

    def may_read(self, actor: str | None, owner: str | None) -> bool:
        """Whether ``actor`` may read what only an owner reads (a workflow's env, its logs)."""
        try:
            self.check(actor, [owner], "read")
        except (Forbidden, Unauthenticated):
            return False
        return True

    def check_owners_declared(self, owners: Iterable[tuple[str, str, str | None]],
                              declared_here: Iterable[str] = ()) -> None:
        """Every object must name a declared team (kind, name, owner) — one in the store or in the same
        apply; raises ValidationError with a "did you mean" and how to declare it."""
        import difflib

        from ferry.errors import ValidationError

        if not self.require_teams:
            return
        owners = list(owners)
        named = {o for _, _, o in owners if o}
        teams = self._load(named)
        bad = [(k, n, o) for k, n, o in owners if o and o not in teams]
        if not bad:
            return
        known = sorted({*self._all_teams(), *declared_here})
        details = []
        for k, n, o in bad:
            close = difflib.get_close_matches(o, known, n=1, cutoff=0.75)
            details.append({"kind": k, "name": n, "field": "metadata.owner",
                            "reason": f"{o} is not a declared Team" + (f" — did you mean {close[0]}?" if close else "")})
        first = next((d["reason"] for d in details if "did you mean" in d["reason"]), details[0]["reason"])
        who = "a Ferry admin applies" if self.closed else "apply"
        raise ValidationError(
            f"{len(bad)} object(s) name an undeclared owner ({first}); nothing was applied. To declare a team, "
            f"{who} a Team manifest first or in the same apply: kind: Team, metadata: {{name: TEAM}}, "
            "spec: {members: [...], admins: [...]} (docs/metadata-language.md)", details)

    def _all_teams(self) -> list[str]:
        names: list[str] = []
        after = None
        while True:
            page, after = self.manifests.list("Team", limit=500, after=after)
            names += [r.name for r in page]
            if after is None or len(names) > 5000:
                return names

    def owner_of(self, kind: str, owner: str | None) -> str | None:
        """Who owns an object: its ``metadata.owner``; shared pools (Resources) belong to the admins."""
        return owner or (self.admin_team if kind == "Resource" else None)

    def check(self, actor: str | None, owners: Iterable[str | None], action: str = "change") -> None:
        """Raise Forbidden unless ``actor`` may mutate objects owned by every team in ``owners``."""
        named = {o for o in owners if o}
        if not named:
            return
        teams = self._load(named)
        if actor is None and not any(o in teams for o in named):
            return
        if self.is_admin(actor, teams):
            return
        for owner in sorted(named):
            team = teams.get(owner)
            if team is None:
                continue
            if actor is None:
                raise Unauthenticated(f"to {action} objects owned by {owner}, Ferry needs to know who you are: "
                                      f"act as one of its members ({_some(team)})",
                                      {"owner": owner, "hint": AS_HINT})
            if actor not in (*team.spec.members, *team.spec.admins):
                raise Forbidden(f"you are {actor}, not a member of {owner}, so you may not {action} objects "
                                f"owned by {owner}; its members: {_some(team)}",
                                {"actor": actor, "owner": owner, "tried": action, "hint": AS_HINT})

    def check_team_change(self, actor: str | None, team_names: Iterable[str]) -> None:
        """Changing a declared team takes one of its admins (or a Ferry admin); with closed teams,
        creating one takes a Ferry admin."""
        teams = self._load(team_names)
        if self.is_admin(actor, teams):
            return
        for name in team_names:
            team = teams.get(name)
            if team is None and self.closed:
                if actor is None:
                    raise Unauthenticated(f"creating team {name} needs a caller identity")
                raise Forbidden(f"{actor} may not create team {name}: creating a team takes a Ferry admin",
                                {"actor": actor, "team": name})
            if team is not None and actor is None:
                raise Unauthenticated(f"changing team {name} needs a caller identity: act as one of its admins "
                                      f"({', '.join(team.spec.admins) or 'none'})", {"team": name, "hint": AS_HINT})
            if team is not None and actor not in team.spec.admins:
                raise Forbidden(f"you are {actor}, not one of the admins of team {name}, so you may not change "
                                f"it; its admins: {', '.join(team.spec.admins) or 'none'}",
                                {"actor": actor, "team": name, "hint": AS_HINT})
