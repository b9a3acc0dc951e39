"""Issue 23, finding 6: teams reaching into each other.

A member of team-b declared a channel whose secret was ``env:FERRY_STACK_SECRET`` and notify sent the
stack's operational credential as a PagerDuty routing key; a team-b channel naming team-a's secret
delivered team-b's alerts to team-a's hook; a team-b workflow took every slot of team-a's Resource.
Now a channel reads only its team's own secrets (``<team>--<name>``), checked at apply and again by
notify, and a Resource is used by another team only by an explicit grant in its manifest.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.bootstrap import Services, in_memory
from ferry.clock import FixedClock
from ferry.domain.manifests import KINDS, channel_secret_problem
from ferry.errors import ValidationError
from ferry.notify import messages as m
from ferry.notify.secrets import LocalSecrets
from ferry.notify.sender import HttpSender
from ferry.notify.service import DEAD_LETTER_TOPIC, DELIVERIES, Notifier
from ferry.store.manifests import ManifestRecord, ManifestRepository

T0 = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
STACK_SECRET = "the-stacks-own-operational-secret"
ENV = {"FERRY_STACK_SECRET": STACK_SECRET, "FERRY_SECRET_TEAM_A__HOOK": "https://hooks.team-a.test/a",
       "FERRY_SECRET_TEAM_B__HOOK": "https://hooks.team-b.test/b",
       "FERRY_SECRET_TEAM_B__COPY": STACK_SECRET}  # a team-owned name holding the stack's credential


def team(name: str, *channels: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "ferry/v1", "kind": "Team", "metadata": {"name": name},
            "spec": {"members": [f"{name}@example.com"], "channels": list(channels)}}


def apply(svc: Services, *docs: dict[str, Any]) -> None:
    svc.apply.apply([KINDS[d["kind"]].model_validate(d) for d in docs], T0, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("ref", ["env:FERRY_STACK_SECRET", "env:FERRY_SECRET_TEAM_A__HOOK",
                                 "projects/p/secrets/team-a--hook/versions/latest", "file:/home/x/.ferry/state.json",
                                 "file:/srv/secrets/team-a--hook", "projects/p/secrets/db-password/versions/1",
                                 "projects/p/secrets/team-b--/versions/1"])
def test_a_channel_naming_a_secret_not_its_teams_is_refused_at_apply(ref: str) -> None:
    svc = in_memory(FixedClock(T0))
    with pytest.raises(ValidationError) as info:
        apply(svc, team("team-b", {"name": "pager", "type": "pagerduty", "secret": ref}))
    [problem] = info.value.details
    assert problem["field"] == "spec.channels[0].secret" and "not a secret of team team-b" in problem["reason"]
    assert svc.manifests.get("Team", "team-b") is None


@pytest.mark.parametrize("ref", ["env:FERRY_SECRET_TEAM_B__HOOK", "projects/p/secrets/team-b--pd/versions/latest",
                                 "file:/srv/secrets/team-b--hook"])
def test_a_channel_naming_its_own_teams_secret_applies(ref: str) -> None:
    svc = in_memory(FixedClock(T0))
    apply(svc, team("team-b", {"name": "pager", "type": "pagerduty", "secret": ref}))
    assert channel_secret_problem("team-b", ref) is None


def test_a_team_whose_name_holds_the_separator_owns_no_channel_secret() -> None:
    """``a--b--x`` must not be both team a's secret ``b--x`` and team a--b's ``x``."""
    assert channel_secret_problem("a--b", "projects/p/secrets/a--b--x/versions/1")
    assert channel_secret_problem("a", "projects/p/secrets/a--b--x/versions/1") is None


def _notifier(svc: Services, posted: list[tuple[str, dict[str, Any]]]) -> Notifier:
    import httpx

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append((str(request.url), json.loads(request.content)))
        return httpx.Response(202, json={"status": "success"})

    sender = HttpSender(httpx.Client(transport=httpx.MockTransport(answer)), sleep=lambda s: None)
    return Notifier(svc.store, svc.publisher, LocalSecrets("/nonexistent", dict(ENV)), svc.clock, sender,
                    "https://events.pagerduty.test/v2/enqueue")


def _store_team_unchecked(svc: Services, doc: dict[str, Any]) -> None:
    """A Team as a store written before the rule holds it (apply would refuse it now)."""
    model = KINDS["Team"].model_validate(doc)
    record = ManifestRecord("Team", model.name, None, model.fingerprint(), 1, model.to_doc(), T0, T0)
    svc.store.write([ManifestRepository.op_for(record)])


@pytest.mark.parametrize(("ref", "leak"), [("env:FERRY_STACK_SECRET", STACK_SECRET),
                                           ("env:FERRY_SECRET_TEAM_A__HOOK", "hooks.team-a.test"),
                                           ("env:FERRY_SECRET_TEAM_B__COPY", STACK_SECRET)])
def test_notify_never_sends_another_teams_secret_or_the_stacks_credential(ref: str, leak: str) -> None:
    svc = in_memory(FixedClock(T0))
    _store_team_unchecked(svc, team("team-b", {"name": "pager", "type": "pagerduty", "secret": ref}))
    posted: list[tuple[str, dict[str, Any]]] = []
    msg = m.alert_message("team-b", "plays", "plays late", severity="critical", action="trigger",
                          kind="late-data", subject="plays", notification_id="plays#1")
    result = _notifier(svc, posted).handle(msg.data, msg.attributes)
    assert result["channels"] == {"pager": "dead_lettered"}  # at once: no retry can fix a refused reference
    assert not any(leak in json.dumps([url, body]) for url, body in posted) and posted == []
    [(_, record)] = list(svc.store.query(DELIVERIES))
    assert record["status"] == "dead" and ("not a secret of team" in record["error"]
                                          or "stack's own credential" in record["error"])
    assert [d.attributes["channel"] for d in svc.publisher.topics[DEAD_LETTER_TOPIC]] == ["team-b:pager"]  # type: ignore[attr-defined]


def workflow(name: str, owner: str, resources: list[str]) -> dict[str, Any]:
    return {"apiVersion": "ferry/v1", "kind": "Workflow", "metadata": {"name": name, "owner": owner},
            "spec": {"schedule": "hourly", "image": "img:1", "command": ["python", "job.py"], "resources": resources}}


def resource(name: str, owner: str | None, concurrency: int = 3, grants: tuple[str, ...] = ()) -> dict[str, Any]:
    meta = {"name": name, **({"owner": owner} if owner else {})}
    return {"apiVersion": "ferry/v1", "kind": "Resource", "metadata": meta,
            "spec": {"concurrency": concurrency, "grants": list(grants)}}


def test_another_teams_resource_is_used_only_by_its_grant() -> None:
    svc = in_memory(FixedClock(T0))
    apply(svc, resource("warehouse", "team-a"))
    with pytest.raises(ValidationError) as info:
        apply(svc, workflow("b-load", "team-b", ["warehouse"]))
    [problem] = info.value.details
    assert problem["field"] == "spec.resources[0]" and "belongs to team-a" in problem["reason"]
    assert svc.manifests.get("Workflow", "b-load") is None
    apply(svc, workflow("a-load", "team-a", ["warehouse"]))  # the owner's own workflow
    apply(svc, resource("warehouse", "team-a", grants=("team-b",)))  # team-a grants it
    apply(svc, workflow("b-load", "team-b", ["warehouse"]))
    # declared in the same apply: the grant is read from the manifest being applied
    with pytest.raises(ValidationError):
        apply(svc, resource("pool", "team-a"), workflow("b-pool", "team-b", ["pool"]))


def test_an_unowned_resource_stays_a_shared_pool() -> None:
    svc = in_memory(FixedClock(T0))
    apply(svc, resource("shared", None), workflow("b-load", "team-b", ["shared"]))


def test_the_stacks_credential_is_refused_even_under_a_secret_manager_name(tmp_path: Any) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "team-b--pd").write_text(STACK_SECRET)
    store = LocalSecrets(tmp_path, {"FERRY_STACK_SECRET": STACK_SECRET})
    from ferry.notify.secrets import SecretRefused

    with pytest.raises(SecretRefused):
        store.resolve("projects/p/secrets/team-b--pd/versions/latest")
