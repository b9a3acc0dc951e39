"""Gabo's BigQuery tables with the real ``google-cloud-bigquery`` client against tests/fakes/bigquery.py.

Every request shape Ferry sends: the table created with the derived schema, ``_period`` time partitioning
and a required partition filter; widened on an additive change, a removal refused; a closed period made
visible by a load job of its Parquet parts (truncating one hour partition, or appending a PT1M period once
under its job id); the per-type read grant; ``ferry query``'s dry run, ``--max-bytes`` guard and query.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from fakes.bigquery import FakeBigQuery, serve
from ferry.domain import periods
from ferry.errors import BadRequest, ValidationError
from ferry.gabo.names import final_prefix
from ferry.gabo.tables import columns, parquet
from ferry.gabo.tables.bigquery import READ_ROLE, BigQueryTables

SCHEMA = {"type": "object", "required": ["user_id"], "properties": {
    "user_id": {"type": "string"}, "n": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
    "device": {"type": "object", "properties": {"os": {"type": "string"}}},
    "tags": {"type": "array", "items": {"type": "string"}}}}
H10 = datetime(2026, 12, 7, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def bq(tmp_path: Path) -> Iterator[tuple[BigQueryTables, FakeBigQuery, Path]]:
    fake = FakeBigQuery({"ferry-events": tmp_path})
    with serve(fake) as url:
        client = bigquery.Client(project="proj", credentials=AnonymousCredentials(),
                                 client_options=ClientOptions(api_endpoint=url))
        client.create_dataset("proj.events")
        yield BigQueryTables("proj", "events", client=client), fake, tmp_path


def close_period(root: Path, name: str, start: datetime, n: int, partitioning: str = "hourly") -> list[str]:
    """Parquet parts of a closed period as closing writes them, and their gs:// URIs."""
    prefix = final_prefix(name, start, periods.partitioning(partitioning))

    def write(key: str, data: bytes) -> None:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    parts = parquet.ParquetParts(write, prefix, "", SCHEMA, start, 1 << 30)
    for i in range(n):
        parts.add(json.dumps({"id": f"e{i}", "type": name, "time": None, "received_at": "2026-12-07T10:00:01Z",
                              "payload": {"user_id": f"u{i % 3}", "n": i, "at": "2026-12-07T10:00:00Z",
                                          "device": {"os": "ios"}, "tags": ["a"], "x": i}}).encode())
    names = parts.close()
    write(prefix + "_SUCCESS", b"{}")
    return [f"gs://ferry-events/{k}" for k in names]


def test_table_created_with_derived_schema_partitioning_and_required_filter(bq: Any) -> None:
    tables, fake, _ = bq
    assert tables.ensure_table("demo-click", SCHEMA, HOUR) == "created"
    t = fake.tables["proj.events.demo_click"].resource
    assert t["schema"]["fields"] == columns.bigquery_schema(columns.columns(SCHEMA))
    assert t["timePartitioning"] == {"type": "HOUR", "field": "_period"}
    assert t["requirePartitionFilter"] is True
    assert tables.ensure_table("demo-click", SCHEMA, HOUR) == "unchanged"
    assert tables.ensure_table("daily", SCHEMA, timedelta(days=1)) == "created"
    assert fake.tables["proj.events.daily"].resource["timePartitioning"]["type"] == "DAY"


def test_additive_change_widens_the_table_and_a_removal_is_refused(bq: Any) -> None:
    tables, fake, _ = bq
    tables.ensure_table("t", SCHEMA, HOUR)
    wider = {**SCHEMA, "properties": {**SCHEMA["properties"], "country": {"type": "string"},
                                      "device": {"type": "object", "properties": {
                                          "os": {"type": "string"}, "model": {"type": "string"}}}}}
    assert tables.ensure_table("t", wider, HOUR) == "updated"
    fields = {f["name"]: f for f in fake.tables["proj.events.t"].resource["schema"]["fields"]}
    assert fields["country"]["mode"] == "NULLABLE"
    assert [f["name"] for f in fields["device"]["fields"]] == ["os", "model"]
    # BigQuery itself refuses what apply refuses first (a removed field), as the fake models it
    client = tables.client
    table = client.get_table("proj.events.t")
    table.schema = [f for f in table.schema if f.name != "n"]
    with pytest.raises(Exception, match="missing in new schema"):
        client.update_table(table, ["schema"])


def test_a_closed_period_is_visible_after_its_load_and_a_query_is_estimated_and_guarded(bq: Any) -> None:
    tables, fake, root = bq
    tables.ensure_table("t", SCHEMA, HOUR)
    uris = close_period(root, "t", H10, 30)
    job = tables.load_period("t", H10, HOUR, uris)
    load = fake.jobs[job]["configuration"]["load"]
    assert load["destinationTable"]["tableId"] == "t$2026120710"
    assert (load["sourceFormat"], load["writeDisposition"]) == ("PARQUET", "WRITE_TRUNCATE")
    assert load["parquetOptions"] == {"enableListInference": True}
    tables.load_period("t", H10, HOUR, uris)  # a retried load replaces the partition: no duplicates
    sql = ("SELECT user_id, count(*) AS n FROM events.t WHERE _period = TIMESTAMP '2026-12-07 10:00:00+00' "
           "GROUP BY 1 ORDER BY 1")
    told: list[str] = []
    r = tables.query(sql, max_bytes=10_000_000, progress=told.append)
    assert r.rows == [["u0", 10], ["u1", 10], ["u2", 10]] and r.columns == ["user_id", "n"]
    assert told and "bytes" in told[0] and r.bytes_processed and r.bytes_processed > 0
    dry = tables.query(sql, dry_run=True)
    assert dry.rows == [] and dry.bytes_processed == r.bytes_processed
    with pytest.raises(BadRequest, match="more than --max-bytes"):
        tables.query(sql, max_bytes=10)
    with pytest.raises(ValidationError, match="without a filter over column"):
        tables.query("SELECT count(*) FROM events.t")
    typed = tables.query("SELECT _id, _received_at, device.os AS os, tags FROM events.t WHERE _period IS NOT NULL "
                         "AND _id = 'e4'").rows
    assert typed == [["e4", "2026-12-07T10:00:01Z", "ios", ["a"]]]
    assert fake.failures == []


def test_a_sub_hourly_period_is_appended_once(bq: Any) -> None:
    tables, fake, root = bq
    tables.ensure_table("m", SCHEMA, timedelta(minutes=1))
    start = H10 + timedelta(minutes=5)
    uris = close_period(root, "m", start, 7, "PT1M")
    first = tables.load_period("m", start, timedelta(minutes=1), uris)
    assert first == "ferry_load_m_20261207T1005"
    assert fake.jobs[first]["configuration"]["load"]["writeDisposition"] == "WRITE_APPEND"
    assert tables.load_period("m", start, timedelta(minutes=1), uris) == first  # 409: appended once
    other = close_period(root, "m", start + timedelta(minutes=1), 3, "PT1M")
    tables.load_period("m", start + timedelta(minutes=1), timedelta(minutes=1), other)
    assert tables.query("SELECT count(*) FROM events.m WHERE _period >= TIMESTAMP '2026-12-07 10:00:00+00'").rows == [[10]]


def test_a_consuming_team_is_granted_read_on_one_table(bq: Any) -> None:
    tables, fake, _ = bq
    tables.ensure_table("t", SCHEMA, HOUR)
    tables.ensure_table("other", SCHEMA, HOUR)
    tables.grant_read("t", ["group:analytics@example.com"])
    tables.grant_read("t", ["serviceAccount:wf-daily@proj.iam.gserviceaccount.com"])
    bindings = fake.tables["proj.events.t"].policy["bindings"]
    assert bindings == [{"role": READ_ROLE, "members": ["group:analytics@example.com",
                                                        "serviceAccount:wf-daily@proj.iam.gserviceaccount.com"]}]
    assert fake.tables["proj.events.other"].policy["bindings"] == []
