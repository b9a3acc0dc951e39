"""Safe by default (issue 21): an owner must be a declared Team. A typo'd ``owner:`` is refused with a
"did you mean" and how to declare a team (exit 3), so no object ends up owned by an open, undeclared team
that anyone may delete. ``ferry dev up`` turns this on (FERRY_REQUIRE_TEAMS=1); a deployment has it
through its first admins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fakes.api_server import served
from ferry.bootstrap import Services, in_memory
from ferry.cli import main
from ferry.config import Settings

TEAM = ("kind: Team\nmetadata: {name: team-newbie}\n"
        "spec: {members: [ana@example.com], admins: [ana@example.com]}\n")


def endpoint(owner: str, name: str = "plays") -> str:
    return f"kind: Endpoint\nmetadata: {{name: {name}, owner: {owner}}}\nspec: {{partitioning: daily}}\n"


@pytest.fixture()
def api() -> Iterator[tuple[Services, str]]:
    svc = in_memory(settings=Settings(require_teams=True))
    with served(svc) as url:
        yield svc, url


def ferry(url: str, *args: str, user: str = "ana@example.com") -> tuple[int, str]:
    r = CliRunner().invoke(main, [*args, "--api", url, "--as", user], catch_exceptions=False)
    return r.exit_code, r.output


def test_a_typod_owner_is_refused_with_a_suggestion(api: tuple[Services, str], tmp_path: Path) -> None:
    svc, url = api
    (tmp_path / "team.yaml").write_text(TEAM)
    assert ferry(url, "apply", "-f", str(tmp_path / "team.yaml"))[0] == 0
    (tmp_path / "e.yaml").write_text(endpoint("team-newbei"))
    code, out = ferry(url, "apply", "-f", str(tmp_path / "e.yaml"))
    assert code == 3, out
    assert "team-newbei is not a declared Team — did you mean team-newbie?" in out
    assert "kind: Team" in out  # how to declare one
    assert svc.manifests.get("Endpoint", "plays") is None


def test_an_unknown_owner_without_a_close_name_says_how_to_declare(api: tuple[Services, str], tmp_path: Path) -> None:
    (tmp_path / "e.yaml").write_text(endpoint("team-nobody"))
    code, out = ferry(api[1], "apply", "-f", str(tmp_path / "e.yaml"))
    assert code == 3 and "team-nobody is not a declared Team" in out and "did you mean" not in out


def test_a_team_declared_in_the_same_apply_counts_and_then_guards_its_objects(api: tuple[Services, str],
                                                                             tmp_path: Path) -> None:
    (tmp_path / "both.yaml").write_text(TEAM + "---\n" + endpoint("team-newbie"))
    assert ferry(api[1], "apply", "-f", str(tmp_path / "both.yaml"))[0] == 0
    code, out = ferry(api[1], "delete", "endpoint", "plays", user="random@evil.example")
    assert code == 5, out
    assert ferry(api[1], "delete", "endpoint", "plays")[0] == 0


def test_existing_objects_of_undeclared_owners_stay_until_changed(tmp_path: Path) -> None:
    """Migration: objects applied before the rule keep working (an unchanged re-apply passes); changing
    one needs its team declared first."""
    from datetime import UTC, datetime

    from ferry.domain.loading import load_sourced
    from ferry.errors import ValidationError
    from ferry.services.authz import Authorizer

    def manifest(text: str) -> object:
        (tmp_path / "e.yaml").write_text(text)
        return next(m for _, m in load_sourced([str(tmp_path / "e.yaml")]))

    now = datetime(2026, 12, 1, tzinfo=UTC)
    before = manifest(endpoint("team-legacy"))
    svc = in_memory(settings=Settings(require_teams=False))  # applied while the rule was off
    svc.apply.apply([before], now)  # type: ignore[list-item]
    strict = type(svc.apply)(svc.manifests, Authorizer(svc.manifests, require_teams=True), svc.apply.hooks)
    assert strict.apply([before], now).changes[0].action == "unchanged"  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="team-legacy is not a declared Team"):
        strict.apply([manifest(endpoint("team-legacy").replace("daily", "hourly"))], now)  # type: ignore[list-item]
