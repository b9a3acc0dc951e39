"""A local fake of the BigQuery REST API v2 — the part Ferry's tables use — for the real ``google-cloud-bigquery``.

Modelled on the REST reference (docs/gabo.md, "BigQuery tables" cites the resources): ``tables.insert``,
``get``, ``patch`` (a schema may only gain NULLABLE/REPEATED fields or relax REQUIRED → NULLABLE: removing or
retyping one is ``400 invalid``), ``delete``, ``getIamPolicy``/``setIamPolicy``; ``jobs.insert`` of load jobs
(``sourceFormat: PARQUET``, a ``$YYYYMMDDHH``/``$YYYYMMDD`` partition decorator whose rows must all fall in
that partition, WRITE_TRUNCATE replaces the partition, WRITE_APPEND appends; a job id used before is
``409 duplicate``) and of query jobs (``dryRun`` answers ``totalBytesProcessed`` at once; a table with
``requirePartitionFilter`` refuses a query with no filter on its partitioning column; ``maximumBytesBilled``
below the estimate fails the job with ``bytesBilledLimitExceeded``); ``jobs.get``; ``jobs.getQueryResults``.

Load jobs read ``gs://<bucket>/…`` from local directories (``buckets``); queries run on DuckDB over the
loaded rows (BigQuery's and DuckDB's SQL agree on what Ferry's tests ask). Bytes processed are those of
the columns a query names (all of them for ``*``) over every loaded partition — BigQuery bills only the
columns read; this fake does not model partition pruning in the estimate.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

BQ_TO_ARROW = {"STRING": pa.string(), "INTEGER": pa.int64(), "INT64": pa.int64(), "FLOAT": pa.float64(),
               "FLOAT64": pa.float64(), "BOOLEAN": pa.bool_(), "BOOL": pa.bool_(),
               "TIMESTAMP": pa.timestamp("us", tz="UTC"), "DATE": pa.date32()}
DECORATOR = {"HOUR": "%Y%m%d%H", "DAY": "%Y%m%d", "MONTH": "%Y%m", "YEAR": "%Y"}


def _err(status: int, reason: str, message: str) -> Response:
    return Response(json.dumps({"error": {"code": status, "message": message,
                                          "errors": [{"reason": reason, "message": message}]}}),
                    status, content_type="application/json")


def _ok(body: Any) -> Response:
    return Response(json.dumps(body), 200, content_type="application/json")


def _arrow_type(f: dict[str, Any]) -> pa.DataType:
    if f["type"] in ("RECORD", "STRUCT"):
        t: pa.DataType = pa.struct([pa.field(x["name"], _arrow_type(x)) for x in f.get("fields", [])])
    else:
        t = BQ_TO_ARROW[f["type"]]
    return pa.list_(t) if f.get("mode") == "REPEATED" else t


def _bq_field(name: str, t: pa.DataType) -> dict[str, Any]:
    if pa.types.is_list(t):
        return {**_bq_field(name, t.value_type), "mode": "REPEATED"}
    if pa.types.is_struct(t):
        return {"name": name, "type": "RECORD", "mode": "NULLABLE",
                "fields": [_bq_field(t.field(i).name, t.field(i).type) for i in range(t.num_fields)]}
    for bq, at in (("INTEGER", pa.int64()), ("FLOAT", pa.float64()), ("BOOLEAN", pa.bool_()), ("DATE", pa.date32())):
        if t == at:
            return {"name": name, "type": bq, "mode": "NULLABLE"}
    if pa.types.is_timestamp(t):
        return {"name": name, "type": "TIMESTAMP", "mode": "NULLABLE"}
    if pa.types.is_integer(t):
        return {"name": name, "type": "INTEGER", "mode": "NULLABLE"}
    return {"name": name, "type": "STRING", "mode": "NULLABLE"}


def _cell(v: Any, f: dict[str, Any], int64_ts: bool) -> Any:
    """A value as getQueryResults encodes it (strings; records as ``{f: [...]}``, arrays as ``[{v}]``)."""
    if v is None:
        return None
    if f.get("mode") == "REPEATED":
        inner = {**f, "mode": "NULLABLE"}
        return [{"v": _cell(x, inner, int64_ts)} for x in v]
    if f["type"] == "RECORD":
        return {"f": [{"v": _cell(v.get(s["name"]), s, int64_ts)} for s in f["fields"]]}
    if f["type"] == "TIMESTAMP":
        micros = int((v - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)
        return str(micros) if int64_ts else repr(micros / 1e6)
    if f["type"] == "BOOLEAN":
        return "true" if v else "false"
    if f["type"] == "DATE":
        return v.isoformat()
    return str(v)


def _schema_problem(old: list[dict[str, Any]], new: list[dict[str, Any]], path: str = "") -> str | None:
    by_name = {f["name"].lower(): f for f in new}
    for f in old:
        n = by_name.get(f["name"].lower())
        if n is None:
            return f"Provided Schema does not match Table. Field {path}{f['name']} is missing in new schema"
        if n["type"] != f["type"] and {n["type"], f["type"]} not in ({"INTEGER", "INT64"}, {"FLOAT", "FLOAT64"},
                                                                      {"BOOLEAN", "BOOL"}, {"RECORD", "STRUCT"}):
            return f"Provided Schema does not match Table. Field {path}{f['name']} has changed type from {f['type']} to {n['type']}"
        if f.get("mode", "NULLABLE") != n.get("mode", "NULLABLE") and not (
                f.get("mode") == "REQUIRED" and n.get("mode", "NULLABLE") == "NULLABLE"):
            return f"Provided Schema does not match Table. Field {path}{f['name']} has changed mode"
        if f["type"] == "RECORD":
            p = _schema_problem(f.get("fields", []), n.get("fields", []), f"{path}{f['name']}.")
            if p:
                return p
    olds = {f["name"].lower() for f in old}
    for f in new:
        if f["name"].lower() not in olds and f.get("mode") == "REQUIRED":
            return f"Provided Schema does not match Table. Cannot add required field {path}{f['name']}"
    return None


@dataclass
class Table:
    resource: dict[str, Any]
    partitions: dict[str, pa.Table] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=lambda: {"version": 1, "etag": "BwE=", "bindings": []})

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(f["name"], _arrow_type(f)) for f in self.resource["schema"]["fields"]])

    def rows(self) -> pa.Table:
        parts = [t for _, t in sorted(self.partitions.items())]
        return pa.concat_tables(parts) if parts else self.arrow_schema.empty_table()


class FakeBigQuery:
    """The REST surface above, state in memory (``tables``, ``jobs``, ``requests`` seen)."""

    def __init__(self, buckets: dict[str, Path] | None = None) -> None:
        self.buckets = dict(buckets or {})
        self.datasets: dict[str, dict[str, Any]] = {}
        self.tables: dict[str, Table] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.results: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.failures: list[str] = []
        self.lock = threading.Lock()

    # --------------------------------------------------------------------------------- routing
    def __call__(self, environ: Any, start_response: Any) -> Any:
        req = Request(environ)
        with self.lock:
            try:
                resp = self.handle(req)
            except Exception as exc:  # a bug of the fake: said plainly (a 500 would be retried by the client)
                import traceback

                self.failures.append(traceback.format_exc())
                resp = _err(400, "fakeBug", f"{type(exc).__name__}: {exc}")
        return resp(environ, start_response)

    def handle(self, req: Request) -> Response:
        path = req.path.removeprefix("/bigquery/v2")
        body = req.get_json(silent=True) if req.data else None
        self.requests.append((req.method, path, body))
        m = re.fullmatch(r"/projects/([^/]+)/datasets/([^/]+)/tables/([^/:]+)(:getIamPolicy|:setIamPolicy)?", path)
        if m:
            key = f"{m[1]}.{m[2]}.{m[3]}"
            if m[4]:
                return self.iam(key, m[4], body or {})
            return self.table(req.method, key, body)
        m = re.fullmatch(r"/projects/([^/]+)/datasets/([^/]+)/tables", path)
        if m and req.method == "POST":
            return self.insert_table(m[1], m[2], body or {})
        m = re.fullmatch(r"/projects/([^/]+)/datasets(?:/([^/]+))?", path)
        if m:
            return self.dataset(req.method, m[1], m[2], body)
        m = re.fullmatch(r"/projects/([^/]+)/jobs", path)
        if m and req.method == "POST":
            return self.insert_job(m[1], body or {})
        m = re.fullmatch(r"/projects/([^/]+)/jobs/([^/]+)", path)
        if m and req.method == "GET":
            job = self.jobs.get(m[2])
            return _ok(job) if job else _err(404, "notFound", f"Not found: Job {m[1]}:{m[2]}")
        m = re.fullmatch(r"/projects/([^/]+)/queries/([^/]+)", path)
        if m and req.method == "GET":
            return self.query_results(m[2], req.args)
        return _err(404, "notFound", f"no fake for {req.method} {path}")

    # --------------------------------------------------------------------------------- datasets/tables
    def dataset(self, method: str, project: str, name: str | None, body: Any) -> Response:
        if method == "POST":
            ref = body["datasetReference"]
            key = f"{ref['projectId']}.{ref['datasetId']}"
            if key in self.datasets:
                return _err(409, "duplicate", f"Already Exists: Dataset {ref['projectId']}:{ref['datasetId']}")
            self.datasets[key] = {**body, "id": f"{ref['projectId']}:{ref['datasetId']}"}
            return _ok(self.datasets[key])
        d = self.datasets.get(f"{project}.{name}")
        return _ok(d) if d else _err(404, "notFound", f"Not found: Dataset {project}:{name}")

    def insert_table(self, project: str, dataset: str, body: dict[str, Any]) -> Response:
        ref = body["tableReference"]
        key = f"{ref['projectId']}.{ref['datasetId']}.{ref['tableId']}"
        if f"{project}.{dataset}" not in self.datasets:
            return _err(404, "notFound", f"Not found: Dataset {project}:{dataset}")
        if key in self.tables:
            return _err(409, "duplicate", f"Already Exists: Table {key}")
        fields = body.get("schema", {}).get("fields", [])
        tp = body.get("timePartitioning")
        if tp:
            if tp.get("type") not in DECORATOR:
                return _err(400, "invalid", f"Invalid time partitioning type {tp.get('type')}")
            col = next((f for f in fields if f["name"] == tp.get("field")), None)
            if tp.get("field") and (col is None or col["type"] not in ("TIMESTAMP", "DATE", "DATETIME")
                                    or col.get("mode") == "REPEATED"):
                return _err(400, "invalid", f"The field specified for partitioning cannot be found in the schema "
                                            f"or is not a top-level TIMESTAMP/DATE field: {tp.get('field')}")
        for f in fields:
            try:
                _arrow_type(f)
            except KeyError:
                return _err(400, "invalid", f"Invalid field type {f['type']} of {f['name']}")
        resource = {**body, "id": key.replace(".", ":", 1), "etag": "e1", "type": "TABLE",
                    "creationTime": "0", "numRows": "0", "numBytes": "0"}
        self.tables[key] = Table(resource)
        return _ok(resource)

    def table(self, method: str, key: str, body: Any) -> Response:
        t = self.tables.get(key)
        if t is None:
            return _err(404, "notFound", f"Not found: Table {key}")
        if method == "GET":
            rows = t.rows()
            return _ok({**t.resource, "numRows": str(rows.num_rows), "numBytes": str(rows.nbytes)})
        if method == "DELETE":
            del self.tables[key]
            return Response(status=204)
        if method in ("PATCH", "PUT"):
            if "schema" in body:
                problem = _schema_problem(t.resource["schema"]["fields"], body["schema"]["fields"])
                if problem:
                    return _err(400, "invalid", problem)
            t.resource = {**t.resource, **body, "etag": f"e{int(t.resource['etag'][1:]) + 1}"}
            return _ok(t.resource)
        return _err(405, "invalid", method)

    def iam(self, key: str, verb: str, body: dict[str, Any]) -> Response:
        t = self.tables.get(key)
        if t is None:
            return _err(404, "notFound", f"Not found: Table {key}")
        if verb == ":setIamPolicy":
            policy = body["policy"]
            for b in policy.get("bindings", []):
                if not re.fullmatch(r"roles/[\w.]+", b["role"]) or not all(
                        re.fullmatch(r"(user|group|serviceAccount|domain):\S+", m) for m in b["members"]):
                    return _err(400, "invalid", f"invalid binding {b}")
            t.policy = {**policy, "etag": "BwF="}
        return _ok(t.policy)

    # --------------------------------------------------------------------------------- jobs
    def insert_job(self, project: str, body: dict[str, Any]) -> Response:
        ref = body.get("jobReference") or {}
        job_id = ref.get("jobId") or f"job_{len(self.jobs)}"
        if job_id in self.jobs:
            return _err(409, "duplicate", f"Already Exists: Job {project}:{ref.get('location', 'US')}.{job_id}")
        conf = body.get("configuration", {})
        job = {"kind": "bigquery#job", "id": f"{project}:{job_id}", "configuration": conf,
               "jobReference": {"projectId": project, "jobId": job_id, "location": ref.get("location", "US")},
               "status": {"state": "DONE"}, "statistics": {"creationTime": "0", "startTime": "0", "endTime": "0"}}
        if "load" in conf:
            error = self.load(conf["load"], job)
        elif "query" in conf:
            if conf.get("dryRun"):
                try:
                    est, _ = self.plan(conf["query"])
                except ValueError as exc:
                    return _err(400, "invalidQuery", str(exc))
                job["statistics"].update({"totalBytesProcessed": str(est), "query": {"totalBytesProcessed": str(est),
                                                                                      "statementType": "SELECT"}})
                return _ok(job)
            try:
                error = self.run_query(conf["query"], job)
            except ValueError as exc:
                return _err(400, "invalidQuery", str(exc))
        else:
            return _err(400, "invalid", "unsupported job configuration")
        if error:
            job["status"] = {"state": "DONE", "errorResult": error, "errors": [error]}
        self.jobs[job_id] = job
        return _ok(job)

    def _files(self, uri: str) -> list[Path]:
        m = re.fullmatch(r"gs://([^/]+)/(.+)", uri)
        if m is None or m[1] not in self.buckets:
            raise FileNotFoundError(uri)
        root = self.buckets[m[1]]
        if "*" not in m[2]:
            return [root / m[2]]
        base = m[2].split("*", 1)[0]
        return sorted(p for p in root.rglob("*") if p.is_file()
                      and fnmatch.fnmatchcase(str(p.relative_to(root)), m[2]) and str(p.relative_to(root)).startswith(base))

    def load(self, conf: dict[str, Any], job: dict[str, Any]) -> dict[str, Any] | None:
        dest = conf["destinationTable"]
        table_id, _, decorator = dest["tableId"].partition("$")
        key = f"{dest['projectId']}.{dest['datasetId']}.{table_id}"
        t = self.tables.get(key)
        if t is None:
            return {"reason": "notFound", "message": f"Not found: Table {key}"}
        if conf.get("sourceFormat") != "PARQUET":
            return {"reason": "invalid", "message": "this fake loads PARQUET only"}
        tp = t.resource.get("timePartitioning")
        try:
            files = [f for u in conf["sourceUris"] for f in self._files(u)]
        except FileNotFoundError as exc:
            return {"reason": "notFound", "message": f"Not found: URI {exc}"}
        if not files:
            return {"reason": "notFound", "message": f"Not found: URI {conf['sourceUris'][0]}"}
        schema = t.arrow_schema
        got = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
        for name in got.column_names:
            if name not in schema.names:
                return {"reason": "invalid", "message": f"Provided Schema does not match Table {key}. "
                                                        f"Cannot add fields (field: {name})"}
        got = pa.table({n: got.column(n).cast(schema.field(n).type) if n in got.column_names
                        else pa.nulls(got.num_rows, schema.field(n).type) for n in schema.names})
        if decorator:
            if not tp or len(decorator) != len(datetime(2000, 1, 1).strftime(DECORATOR[tp["type"]])):
                return {"reason": "invalid", "message": f"Invalid partition decorator {decorator} for {key}"}
            col = got.column(tp["field"]).to_pylist()
            outside = [v for v in col if v is None or v.strftime(DECORATOR[tp["type"]]) != decorator]
            if outside:
                return {"reason": "invalid", "message": f"{len(outside)} row(s) fall outside partition {decorator}"}
            if conf.get("writeDisposition") == "WRITE_TRUNCATE" or decorator not in t.partitions:
                t.partitions[decorator] = got
            else:
                t.partitions[decorator] = pa.concat_tables([t.partitions[decorator], got])
        else:
            if conf.get("writeDisposition") == "WRITE_TRUNCATE":
                t.partitions.clear()
            t.partitions[f"~{len(t.partitions)}"] = got
        job["statistics"]["load"] = {"inputFiles": str(len(files)), "outputRows": str(got.num_rows)}
        return None

    # --------------------------------------------------------------------------------- queries
    def _referenced(self, sql: str, default: dict[str, Any] | None) -> list[tuple[str, str]]:
        out = []
        for m in re.finditer(r"(?:FROM|JOIN)\s+`?([\w-]+(?:\.[\w-]+){0,2})`?", sql, re.I):
            parts = m[1].split(".")
            if len(parts) == 1 and default:
                parts = [default["projectId"], default["datasetId"], parts[0]]
            elif len(parts) == 2:
                parts = [(default or {}).get("projectId", "?"), *parts]
            out.append((".".join(parts), m[0]))
        return out

    def plan(self, conf: dict[str, Any]) -> tuple[int, list[str]]:
        sql, default = conf["query"], conf.get("defaultDataset")
        estimate, keys = 0, []
        for key, _ in self._referenced(sql, default):
            t = self.tables.get(key)
            if t is None:
                raise ValueError(f"Not found: Table {key} was not found in location US")
            tp = t.resource.get("timePartitioning") or {}
            if t.resource.get("requirePartitionFilter") and tp.get("field") and not re.search(
                    rf"\bWHERE\b[\s\S]*\b{re.escape(tp['field'])}\b", sql, re.I):
                raise ValueError(f"Cannot query over table '{key}' without a filter over column(s) "
                                 f"'{tp['field']}' that can be used for partition elimination")
            rows = t.rows()
            star = re.search(r"SELECT\s+\*|\.\*", sql, re.I) is not None
            estimate += sum(rows.column(n).nbytes for n in rows.column_names
                            if star or re.search(rf"\b{re.escape(n)}\b", sql))
            keys.append(key)
        return estimate, keys

    def run_query(self, conf: dict[str, Any], job: dict[str, Any]) -> dict[str, Any] | None:
        import duckdb

        estimate, keys = self.plan(conf)
        limit = conf.get("maximumBytesBilled")
        if limit is not None and estimate > int(limit):
            return {"reason": "bytesBilledLimitExceeded",
                    "message": f"Query exceeded limit for bytes billed: {limit}. {estimate} or higher required."}
        sql = conf["query"]
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        for key, ref in self._referenced(sql, conf.get("defaultDataset")):
            name = "t_" + re.sub(r"\W", "_", key)
            con.register(name, self.tables[key].rows())
            sql = sql.replace(ref, ref.split()[0] + " " + name)
        try:
            result = con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise ValueError(str(exc).splitlines()[0]) from exc
        fields = [_bq_field(n, result.schema.field(n).type) for n in result.column_names]
        self.results[job["jobReference"]["jobId"]] = (fields, result.to_pylist())
        job["statistics"]["query"] = {"totalBytesProcessed": str(estimate), "totalBytesBilled": str(estimate),
                                      "statementType": "SELECT"}
        job["statistics"]["totalBytesProcessed"] = str(estimate)
        return None

    def query_results(self, job_id: str, args: Any) -> Response:
        job = self.jobs.get(job_id)
        if job is None or job_id not in self.results:
            return _err(404, "notFound", f"Not found: Job {job_id}")
        fields, rows = self.results[job_id]
        int64_ts = str(args.get("formatOptions.useInt64Timestamp", "")).lower() == "true"
        out = {"kind": "bigquery#getQueryResultsResponse", "jobReference": job["jobReference"], "jobComplete": True,
               "schema": {"fields": fields}, "totalRows": str(len(rows)), "cacheHit": False,
               "totalBytesProcessed": job["statistics"]["query"]["totalBytesProcessed"]}
        start = int(args.get("startIndex", 0))
        n = args.get("maxResults")
        page = rows[start:] if n is None else rows[start:start + int(n)]
        if n is None or int(n) > 0:
            out["rows"] = [{"f": [{"v": _cell(r[f["name"]], f, int64_ts)} for f in fields]} for r in page]
        return _ok(out)


@contextmanager
def serve(fake: FakeBigQuery) -> Iterator[str]:
    """Serve ``fake`` on a free local port; yields its base URL (the client's ``api_endpoint``)."""
    server = make_server("127.0.0.1", 0, fake, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
