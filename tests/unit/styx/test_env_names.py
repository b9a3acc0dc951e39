"""Env names are POSIX names, refused at apply and at trigger with the field named (exit 3), so no
instance is ever handed an env its execution cannot start with (the ``A=B`` case)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import functions_framework
import pytest

from ferry.bootstrap import in_memory, use_process_services
from ferry.clock import FixedClock
from ferry.config import Settings
from ferry.errors import ValidationError
from ferry.services.apply import parse_documents

from .conftest import apply, workflow

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", ["A=B", "1X", "", "MY-VAR", "É"])
def test_apply_refuses_an_env_name_that_is_not_posix(name) -> None:
    with pytest.raises(ValidationError) as err:
        parse_documents([workflow("agg", env={name: "x", "OK_1": "y"})], ["wf.yaml"])
    assert err.value.exit_code == 3
    assert [d["field"] for d in err.value.details] == ["spec.env"]
    assert repr(name) in str(err.value.details[0])


def test_apply_takes_posix_env_names(svc) -> None:
    apply(svc, workflow("agg", env={"_X": "1", "Mode2": "a=b"}))  # '=' is fine in a value


def test_trigger_and_backfill_refuse_a_bad_env_name_before_anything_is_written() -> None:
    svc = in_memory(FixedClock(datetime(2026, 11, 26, 12, tzinfo=UTC)), Settings(project="demo"))
    use_process_services(svc)
    try:
        apply(svc, workflow("agg"))
        client = functions_framework.create_app("api", str(ROOT / "functions" / "main.py"), "http").test_client()
        writes = svc.store.stats.writes
        r = client.post("/v1/workflows/agg/instances/2026-11-26T10/trigger", json={"env": {"A=B": "x"}})
        assert r.status_code == 422, r.get_json()
        body = r.get_json()["error"]
        assert body["code"] == "invalid" and body["details"][0]["field"] == "env"
        assert "'A=B'" in str(body["details"][0])
        r = client.post("/v1/backfills", json={"workflow": "agg", "start": "2026-11-26T00", "end": "2026-11-26T02",
                                               "env": {"A=B": "x"}})
        assert r.status_code == 422 and r.get_json()["error"]["details"][0]["field"] == "env"
        assert svc.store.stats.writes == writes
        ok = client.post("/v1/workflows/agg/instances/2026-11-26T10/trigger", json={"env": {"A": "B=C"}})
        assert ok.status_code == 201, ok.get_json()
    finally:
        use_process_services(None)
