"""``ferry query``: SQL over the closed periods of event types, as tables ``events.<table>``.

Locally DuckDB reads the sink's closed periods — a period directory holding ``_SUCCESS`` — and nothing
else: a period being written (parts without ``_SUCCESS``) and staging objects are invisible. Parquet
periods are read column by column (``part-*.parquet``); NDJSON periods (``spec.format: ndjson``, or
periods closed before Parquet) are read through the same columns, with ``_extra`` holding their whole
payload. In a deployment the same table names are BigQuery's (:mod:`ferry.gabo.tables.bigquery`).

A type's table name is its name with ``-`` and ``.`` as ``_`` (``demo-click`` → ``events.demo_click``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from ferry.errors import ValidationError
from ferry.gabo.tables import columns as c

DATASET = "events"
SUCCESS = "_SUCCESS"
DUCK_TYPES = {"string": "VARCHAR", "integer": "BIGINT", "number": "DOUBLE", "boolean": "BOOLEAN",
              "timestamp": "TIMESTAMPTZ", "date": "DATE"}
_PERIOD_DIR = re.compile(r"dt=(\d{4})-(\d{2})(?:-(\d{2}))?(?:/hour=(\d{2}))?(?:/minute=(\d{2}))?$")
MAX_ROWS = 10_000


def table_name(event_type: str) -> str:
    """``demo-click`` → ``demo_click`` (the table of the type in ``events``, locally and in BigQuery)."""
    return event_type.replace("-", "_").replace(".", "_")


@dataclass
class Result:
    """A query's answer: column names, rows (JSON-ready values), and what it read."""

    columns: list[str]
    rows: list[list[Any]]
    engine: str
    truncated: bool = False
    bytes_processed: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "engine": self.engine, "truncated": self.truncated,
                "bytes_processed": self.bytes_processed, **self.stats}


@dataclass(frozen=True)
class ClosedPeriod:
    directory: Path
    start: datetime
    parquet: tuple[Path, ...]
    ndjson: tuple[Path, ...]


def duck_type(col: c.Column) -> str:
    if col.kind == "struct":
        return "STRUCT(" + ", ".join(f'"{f.name}" {duck_type(f)}' for f in col.fields) + ")"
    if col.kind == "list":
        assert col.item is not None
        return f"{duck_type(col.item)}[]"
    return DUCK_TYPES[col.kind]


def period_of(directory: Path) -> datetime | None:
    """The start of the period stored in ``.../dt=YYYY-MM-DD/hour=HH[/minute=MM]`` (UTC)."""
    m = _PERIOD_DIR.search(directory.as_posix())
    if m is None:
        return None
    y, mo, d, h, mi = (int(x) if x else 0 for x in m.groups())
    return datetime(y, mo, d or 1, h, mi, tzinfo=UTC)


def closed_periods(root: Path, event_type: str) -> list[ClosedPeriod]:
    """The closed periods of ``event_type`` under the sink directory ``root``: those with ``_SUCCESS``."""
    base = root / "events" / event_type
    out: list[ClosedPeriod] = []
    for dirpath, _dirs, files in os.walk(base):
        if SUCCESS not in files:
            continue
        d = Path(dirpath)
        start = period_of(d)
        if start is None:
            continue
        out.append(ClosedPeriod(d, start, tuple(sorted(d / f for f in files if f.startswith("part-") and f.endswith(".parquet"))),
                                tuple(sorted(d / f for f in files if f.startswith("part-") and f.endswith(".jsonl.gz")))))
    return sorted(out, key=lambda p: p.start)


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def view_sql(cols: c.Columns, periods: list[ClosedPeriod]) -> str:
    """The SELECT of one type's table over its closed periods (every column of ``cols``, in order)."""
    names = [col.name for col in cols.all]
    typed = ", ".join(f'CAST(NULL AS {duck_type(col)}) AS "{col.name}"' for col in cols.all)
    parts = [f"SELECT {typed} WHERE false"]
    parquet = [p for period in periods for p in period.parquet]
    if parquet:
        parts.append(f"SELECT * FROM read_parquet({_sql_list(parquet)}, union_by_name = true)")
    for period in periods:
        if period.ndjson:
            parts.append(_ndjson_select(cols, period))
    body = " UNION ALL BY NAME ".join(f"({p})" for p in parts)
    return "SELECT " + ", ".join(f'"{n}"' for n in names) + f" FROM ({body})"


def _ndjson_select(cols: c.Columns, period: ClosedPeriod) -> str:
    out = ["id AS _id", f"TIMESTAMPTZ '{period.start.isoformat()}' AS _period",
           "CAST(received_at AS TIMESTAMPTZ) AS _received_at", "TRY_CAST(time AS TIMESTAMPTZ) AS _event_time",
           "coalesce(replayed, false) AS _replayed", "false AS _late"]
    for col in cols.payload:
        arrow = "->>" if col.kind in DUCK_TYPES else "->"
        out.append(f"TRY_CAST(payload {arrow} '$.{col.name}' AS {duck_type(col)}) AS \"{col.name}\"")
    out.append("CAST(payload AS VARCHAR) AS _extra")
    return (f"SELECT {', '.join(out)} FROM read_json({_sql_list(list(period.ndjson))}, format = 'newline_delimited', "
            "compression = 'gzip', columns = {id: 'VARCHAR', time: 'VARCHAR', received_at: 'VARCHAR', "
            "replayed: 'BOOLEAN', payload: 'JSON'})")


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        return c.canonical_time(v) if v.tzinfo else v.isoformat()
    if isinstance(v, date | time):
        return v.isoformat()
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return v


class DuckDBTables:
    """The local engine: ``events.<table>`` views over the closed periods under the sink ``root``."""

    engine = "duckdb"

    def __init__(self, root: str | Path, types: Mapping[str, c.Columns]) -> None:
        self.root, self.types = Path(root), dict(types)

    def connect(self) -> Any:
        import duckdb

        # A query reads the closed periods and nothing else of this machine: only the sink's events/
        # directory is open to it (no read_csv('/etc/...')), and the setting is locked.
        events = str((self.root / "events").resolve()) + "/"
        con = duckdb.connect(":memory:", config={"threads": 2, "autoload_known_extensions": False,
                                                 "autoinstall_known_extensions": False})
        con.execute("SET allowed_directories = ?", [[events]])
        con.execute("SET enable_external_access = false")
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE SCHEMA {DATASET}")
        for name, cols in sorted(self.types.items()):
            periods = closed_periods(self.root, name)
            con.execute(f'CREATE VIEW {DATASET}."{table_name(name)}" AS {view_sql(cols, periods)}')
        con.execute("SET lock_configuration = true")
        return con

    def query(self, sql: str, max_rows: int = MAX_ROWS) -> Result:
        """Run ``sql``; at most ``max_rows`` rows come back (``truncated`` says when more matched).

        Raises:
            ValidationError: the SQL does not parse, names an unknown table or column, or fails.
        """
        import duckdb

        con = self.connect()
        try:
            cur = con.execute(sql)
            names = [d[0] for d in cur.description or []]
            rows = cur.fetchmany(max_rows + 1)
        except duckdb.Error as exc:
            raise ValidationError(f"query failed: {str(exc).splitlines()[0]}") from exc
        finally:
            con.close()
        return Result(names, [[_plain(v) for v in r] for r in rows[:max_rows]], self.engine,
                      truncated=len(rows) > max_rows)


def engine_of(sink: Any, project: str) -> dict[str, Any]:
    """Where ``ferry query`` runs for a stack whose sink is ``sink``: DuckDB over a local sink's closed
    periods (through the API), or BigQuery (from the CLI, with the caller's own credentials)."""
    root = getattr(sink, "root", None)
    if isinstance(root, Path):
        return {"engine": "duckdb", "dataset": DATASET}
    return {"engine": "bigquery", "project": project, "dataset": DATASET}


def query_closed(sink: Any, event_types: Mapping[str, Any], sql: str, max_rows: int = MAX_ROWS) -> Result:
    """``sql`` over the closed periods of ``event_types`` (name → payload JSON Schema) in a local sink.

    Raises:
        BadRequest: the sink is not local (a deployment's tables are BigQuery's: query them there).
        ValidationError: the query failed.
    """
    from ferry.errors import BadRequest

    root = getattr(sink, "root", None)
    if not isinstance(root, Path):
        raise BadRequest("this deployment's tables are in BigQuery: `ferry query` runs there from the CLI")
    return DuckDBTables(root, {n: c.columns(s) for n, s in event_types.items()}).query(sql, max_rows)
