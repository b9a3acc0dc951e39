"""One bad endpoint never fails a whole evaluation (finding: `upstream: ["../../x"]` made every
evaluate answer 500 for all teams). Its error is recorded on it and shown in status."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from ferry.api.app import router
from ferry.api.identity import HEADER, Identifier, IdentityConfig
from ferry.bootstrap import in_memory
from ferry.clock import FixedClock
from ferry.services.apply import parse_documents

NOW = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)


def test_a_stored_endpoint_with_a_bad_reference_fails_alone() -> None:
    svc = in_memory(FixedClock(NOW), identifier=Identifier(IdentityConfig(HEADER, stack_secret="s")))
    docs = [{"apiVersion": "ferry/v1", "kind": "Endpoint", "metadata": {"name": n, "owner": "team-a"},
             "spec": {"partitioning": "hourly", "start": "2026-11-26T00:00:00Z", "sla": {"error_after": "PT1H"}}}
            for n in ("good", "bad")]
    svc.apply.apply(parse_documents(docs), NOW - timedelta(hours=1), None)
    evaluate = lambda: router.dispatch(svc, "POST", "/v1/evaluate", {}, {"X-Ferry-Stack-Secret": "s"}, b"")  # noqa: E731
    assert evaluate()[0] == 200
    # Data written before names were validated: the summary of `bad` names an impossible upstream.
    from ferry.datamon.repository import DatamonRepository

    repo = DatamonRepository(svc.store)
    repo.write([repo.summary_op("bad", {"upstream": ["../../x"], "upstream_all": ["../../x"], "next_check": NOW})])
    status, result = evaluate()
    assert status == 200, result
    view = {r["endpoint"]: r for r in router.dispatch(svc, "GET", "/v1/status", {}, {}, b"")[1]["endpoints"]}
    assert "not a valid endpoint name" in view["bad"]["error"]
    assert view["good"]["error"] is None and view["good"]["state"] == "late"
    assert json.dumps(result)  # the evaluation itself reported normally
