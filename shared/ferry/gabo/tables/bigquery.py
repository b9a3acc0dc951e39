"""BigQuery tables of event types: one native table per type in the dataset ``events``, a load job per
closed period, and ``ferry query`` in a deployment (docs/gabo.md, "Reading delivered data").

Why load jobs, not an external (BigLake) table over the bucket: an external table over
``events/<type>/`` would show a period's parts while it is being written (parts land before
``_SUCCESS``), so a query could see a partly closed period; a load job runs only after ``_SUCCESS``
and replaces (or appends) one partition atomically — a query sees a period whole or not at all, a few
seconds after it closed. Loads are free; the table's storage is paid twice (bucket and table), and a
query bills only the columns it reads, of the partitions its ``_period`` filter keeps.

Requests (REST v2, through ``google-cloud-bigquery``; proven against ``tests/fakes/bigquery.py``):

- ``tables.insert`` / ``tables.patch``: schema from :func:`ferry.gabo.tables.columns.bigquery_schema`,
  ``timePartitioning {type: HOUR|DAY|MONTH, field: _period}``, ``requirePartitionFilter: true``;
  a patch only adds NULLABLE fields (what the schema evolution rules let through);
- ``jobs.insert`` load: ``sourceFormat: PARQUET``, ``parquetOptions.enableListInference``,
  ``sourceUris`` the period's ``part-*.parquet``, destination ``<table>$<partition>``; a period that
  is a whole table partition (hourly → HOUR, daily → DAY) is loaded with ``WRITE_TRUNCATE`` (a retry
  replaces the same partition); a shorter period (PT1M) is appended with ``WRITE_APPEND`` under the job
  id ``ferry_load_<table>_<period>`` — BigQuery refuses a second job of the same id, so it appends once;
- ``tables.setIamPolicy``: ``roles/bigquery.dataViewer`` on one table for a consuming team;
- ``jobs.insert`` query: first ``dryRun: true`` (``statistics.totalBytesProcessed``), then the query
  with ``maximumBytesBilled``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from ferry.errors import BadRequest, InfraError, ValidationError
from ferry.gabo.tables import columns as c
from ferry.gabo.tables.query import DATASET, MAX_ROWS, Result, _plain, table_name

READ_ROLE = "roles/bigquery.dataViewer"


class Tables(Protocol):
    """Where closed periods become queryable tables (the port closing and apply use)."""

    def ensure_table(self, event_type: str, payload_schema: Any, width: timedelta) -> str: ...

    def load_period(self, event_type: str, start: datetime, width: timedelta, uris: Sequence[str]) -> str: ...


def from_settings(settings: Any) -> Tables | None:
    """The deployment's tables (``FERRY_BIGQUERY_DATASET`` set), or None (the local stack: ``ferry query``
    reads the sink)."""
    if not getattr(settings, "bigquery_dataset", ""):
        return None
    return BigQueryTables(settings.project, settings.bigquery_dataset)


def partition_type(width: timedelta) -> str:
    """The table's time partitioning for periods of ``width``: HOUR up to an hour, DAY up to a day."""
    if width <= timedelta(hours=1):
        return "HOUR"
    if width <= timedelta(days=1):
        return "DAY"
    return "MONTH"


def decorator(start: datetime, ptype: str) -> str:
    return start.strftime({"HOUR": "%Y%m%d%H", "DAY": "%Y%m%d", "MONTH": "%Y%m"}[ptype])


class BigQueryTables:
    """The tables of event types in one BigQuery dataset (``client``: a ``bigquery.Client``, injected)."""

    def __init__(self, project: str, dataset: str = DATASET, client: Any = None, location: str | None = None) -> None:
        self.project, self.dataset, self._client, self.location = project, dataset, client, location

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import bigquery

            self._client = bigquery.Client(project=self.project, location=self.location)
        return self._client

    def table_id(self, event_type: str) -> str:
        return f"{self.project}.{self.dataset}.{table_name(event_type)}"

    # ------------------------------------------------------------------------------------ provisioning
    def ensure_table(self, event_type: str, payload_schema: Any, width: timedelta) -> str:
        """Create the type's table, or widen it with the new schema's added fields. ``created``,
        ``updated`` or ``unchanged``.

        Raises:
            ValidationError: BigQuery refused the schema (a removed or retyped field: apply refuses those first).
        """
        from google.api_core import exceptions
        from google.cloud import bigquery

        fields = [bigquery.SchemaField.from_api_repr(f) for f in c.bigquery_schema(c.columns(payload_schema))]
        try:
            table = self.client.get_table(self.table_id(event_type))
        except exceptions.NotFound:
            table = bigquery.Table(self.table_id(event_type), schema=fields)
            table.time_partitioning = bigquery.TimePartitioning(type_=partition_type(width), field=c.PERIOD)
            table.require_partition_filter = True
            table.description = f"Closed periods of event type {event_type} (Ferry)"
            try:
                self.client.create_table(table)
            except exceptions.Conflict:
                return "unchanged"  # created by a concurrent apply
            return "created"
        have = {f.name for f in table.schema}
        added = [f for f in fields if f.name not in have]
        widened = _widen(list(table.schema), fields)
        if not added and widened == list(table.schema):
            return "unchanged"
        table.schema = widened
        try:
            self.client.update_table(table, ["schema"])
        except exceptions.BadRequest as exc:
            raise ValidationError(f"BigQuery refused the new schema of {self.table_id(event_type)}: {exc.message}") from exc
        return "updated"

    def grant_read(self, event_type: str, members: Sequence[str]) -> None:
        """Give ``members`` (``group:…``, ``serviceAccount:…``) read access to this type's table only."""
        policy = self.client.get_iam_policy(self.table_id(event_type))
        binding = next((b for b in policy.bindings if b["role"] == READ_ROLE), None)
        if binding is None:
            policy.bindings.append({"role": READ_ROLE, "members": set(members)})
        else:
            binding["members"] = set(binding["members"]) | set(members)
        self.client.set_iam_policy(self.table_id(event_type), policy)

    # ------------------------------------------------------------------------------------ loading
    def load_period(self, event_type: str, start: datetime, width: timedelta, uris: Sequence[str]) -> str:
        """Make one closed period visible: load its Parquet parts into its partition (idempotent: see the
        module's docstring). Returns the job id.

        Raises:
            InfraError: the load failed (the next close retries it).
        """
        from google.api_core import exceptions
        from google.cloud import bigquery

        ptype = partition_type(width)
        whole = width == {"HOUR": timedelta(hours=1), "DAY": timedelta(days=1)}.get(ptype)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE if whole else bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER)
        options = bigquery.ParquetOptions()
        options.enable_list_inference = True  # LIST<T> columns load as REPEATED T, not a RECORD of list.element
        config.parquet_options = options
        job_id = f"ferry_load_{table_name(event_type)}_{start:%Y%m%dT%H%M}"
        if whole:
            job_id += f"_{datetime.now().strftime('%Y%m%d%H%M%S%f')}"  # a truncating retry is a new job
        dest = f"{self.table_id(event_type)}${decorator(start, ptype)}"
        try:
            job = self.client.load_table_from_uri(list(uris), dest, job_config=config, job_id=job_id)
            job.result()
        except exceptions.Conflict:
            return job_id  # appended once already (the job id is the period's)
        except exceptions.GoogleAPICallError as exc:
            raise InfraError(f"loading {dest} failed: {exc}") from exc
        return str(job.job_id)

    # ------------------------------------------------------------------------------------ querying
    def query(self, sql: str, max_bytes: int | None = None, dry_run: bool = False, max_rows: int = MAX_ROWS,
              progress: Callable[[str], None] | None = None) -> Result:
        """A dry run first (its byte estimate told to ``progress``), refused above ``max_bytes``; then the
        query, billed at most ``max_bytes``.

        Raises:
            ValidationError: the SQL is refused (syntax, unknown table, no ``_period`` filter).
            BadRequest: the estimate exceeds ``max_bytes``.
        """
        from google.api_core import exceptions
        from google.cloud import bigquery

        default = bigquery.DatasetReference(self.project, self.dataset)
        try:
            dry = self.client.query(sql, job_config=bigquery.QueryJobConfig(
                dry_run=True, use_query_cache=False, default_dataset=default))
        except exceptions.BadRequest as exc:
            raise ValidationError(f"query refused: {exc.message}") from exc
        estimate = int(dry.total_bytes_processed or 0)
        if progress:
            progress(f"this query will process {estimate:,} bytes")
        if max_bytes is not None and estimate > max_bytes:
            raise BadRequest(f"the query would process {estimate:,} bytes, more than --max-bytes {max_bytes:,}: "
                             "filter on _period or select fewer columns")
        if dry_run:
            return Result([], [], "bigquery", bytes_processed=estimate, stats={"dry_run": True})
        try:
            config = bigquery.QueryJobConfig(default_dataset=default)
            if max_bytes is not None:
                config.maximum_bytes_billed = max_bytes
            job = self.client.query(sql, job_config=config)
            rows = job.result(max_results=max_rows + 1)
            names = [f.name for f in rows.schema]
            got = [[_plain(v) for v in r.values()] for r in rows]
        except exceptions.BadRequest as exc:
            raise ValidationError(f"query failed: {exc.message}") from exc
        except exceptions.Forbidden as exc:
            raise BadRequest(f"query refused: {exc.message}") from exc
        return Result(names, got[:max_rows], "bigquery", truncated=len(got) > max_rows,
                      bytes_processed=int(job.total_bytes_processed or estimate))


def _widen(have: list[Any], want: list[Any]) -> list[Any]:
    """The table's fields with ``want``'s added ones appended (nested RECORDs too), never removed."""
    from google.cloud import bigquery

    by_name = {f.name: f for f in want}
    out = []
    for f in have:
        w = by_name.get(f.name)
        if w is not None and f.field_type == "RECORD" and w.field_type == "RECORD":
            sub = _widen(list(f.fields), list(w.fields))
            if sub != list(f.fields):
                f = bigquery.SchemaField(f.name, f.field_type, mode=f.mode, fields=sub)
        out.append(f)
    names = {f.name for f in have}
    return out + [f for f in want if f.name not in names]


__all__ = ["BigQueryTables", "READ_ROLE", "partition_type", "decorator"]
