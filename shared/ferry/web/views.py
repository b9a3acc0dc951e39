"""What each page of the web view shows, read from the store with reads bounded by what is shown.

Every function takes the services and ``now`` and returns plain data for a template; none reads a
collection whole: lists are pages (``limit`` + a cursor), a page of one object reads that object and
a bounded number of its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ferry.datamon import domain, silences
from ferry.datamon.partitions import invalidations
from ferry.datamon.repository import ENDPOINTS, LINEAGE, PARTITIONS
from ferry.datamon.views import status_row
from ferry.domain.manifests import Endpoint, EventType, Workflow
from ferry.errors import FerryError, NotFound
from ferry.store.base import MAX_IN, Where
from ferry.styx import machine as m
from ferry.styx.repository import BACKFILLS, INSTANCES, run_from_doc
from ferry.styx.service import instance_view

if TYPE_CHECKING:
    from ferry.bootstrap import Services
    from ferry.styx.service import StyxService

PAGE = 50          # rows of a list page
PARTITIONS_SHOWN = 30
NEIGHBOURS = 50    # producing/consuming workflows and downstream endpoints shown on an endpoint page
LOG_LINES = 200
LAST_RUNS_SHOWN = 12  # instances in a workflow's strip on the workflow list


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


# -- endpoints ----------------------------------------------------------------------------------------

def endpoints(services: Services, now: datetime, owner: str | None = None, after: str | None = None,
              limit: int = PAGE, state: str | None = None) -> Page:
    """One page of endpoints by name (worst first within the page): ``limit + 1`` summary reads.
    ``state``: only those whose last evaluation left them in that state (``late``, ``warn``, …)."""
    where = [Where("owner", "==", owner)] if owner else []
    if state:
        where.append(Where("state", "==", state))
    rows = services.store.query(ENDPOINTS, where, limit=limit + 1, start_after=after)
    active = silences.active(services.store, now)
    items = [r for name, doc in rows[:limit] if (r := status_row(name, doc, now, active)) is not None]
    items.sort(key=lambda r: (domain.RANK[domain.State(r["state"])], r["endpoint"]))
    return Page(items, rows[limit - 1][0] if len(rows) > limit else None)


def open_alerts(services: Services, endpoint: str, limit: int = 20) -> list[dict[str, Any]]:
    """The endpoint's open alerts, in whatever model Datamon keeps them (its own read of them)."""
    from ferry.datamon.views import alerts

    return list(alerts(services.store, endpoint=endpoint, limit=limit)["items"])


def _lateness(landed_at: datetime | None, deadline: datetime, now: datetime) -> int:
    return int(max(timedelta(0), (landed_at or now) - deadline).total_seconds())


def endpoint(services: Services, name: str, now: datetime, before: str | None = None) -> dict[str, Any]:
    """An endpoint's page: SLA, owner, partitions (state, landed at, records, lateness, volume), open
    alerts, producing and consuming workflows with the producing instance of each partition shown,
    upstream and downstream endpoints. About 8 queries and ``PARTITIONS_SHOWN + NEIGHBOURS`` reads.

    Raises:
        NotFound: no such endpoint.
    """
    rec = services.manifests.get("Endpoint", name)
    if rec is None:
        raise NotFound(f"endpoint {name!r} not found")
    model = rec.model_as(Endpoint)
    policy = domain.Policy.from_spec(rec.name, rec.owner or "", model.spec, rec.generation)
    store = services.store
    summary_doc = store.get(ENDPOINTS, name) or {}
    row = status_row(name, summary_doc, now) or {"state": "pending", "open_partitions": [], "recent": []}
    where = [Where("endpoint", "==", name)]
    expected: set[str] = set()
    if before:  # an older page: the periods before ``before`` (expected ones too, landed or not)
        try:
            until = policy.cadence.parse(before)
        except ValueError:
            raise NotFound(f"{before!r} is not a partition of {name}") from None
        where.append(Where("start", "<", until))
        first = policy.cadence.floor(model.spec.start) if model.spec.start else None
        t = until
        for _ in range(PARTITIONS_SHOWN):
            t = policy.cadence.prev(t)
            if first is not None and t < first:
                break
            expected.add(policy.cadence.format(t))
    landed = {d["partition"]: d for _, d in store.query(PARTITIONS, where, order_by="start", descending=True,
                                                          limit=PARTITIONS_SHOWN)}
    states = {p["partition"]: p["state"] for p in row["recent"]}
    states.update({p["partition"]: p["state"] for p in row["open_partitions"]})
    if before:
        states = {p: s for p, s in states.items() if p in expected}
    producers = [{"workflow": i, **d} for i, d in store.query(LINEAGE, [Where("produces", "==", name)],
                                                             limit=NEIGHBOURS)]
    consumers = [{"workflow": i, **d} for i, d in store.query(LINEAGE, [Where("depends_on", "array_contains", name)],
                                                             limit=NEIGHBOURS)]
    downstream = [i for i, _ in store.query(ENDPOINTS, [Where("upstream_all", "array_contains", name)],
                                            limit=NEIGHBOURS)]
    shown = sorted(set(landed) | set(states) | expected, key=policy.cadence.parse, reverse=True)[:PARTITIONS_SHOWN]
    bad = invalidations(services.store, name, [p for p in shown if p not in landed])
    partitions = []
    for p in shown:
        doc = landed.get(p) or {}
        start = policy.cadence.parse(p)
        deadline = domain.clocks(policy, start).late_at
        landed_at = domain._utc(doc.get("landed_at"))
        state = states.get(p) or ("landed_late" if landed_at and landed_at > deadline else "ok" if landed_at
                                  else "late" if now > deadline else "pending")
        partitions.append({"partition": p, "state": state, "landed_at": landed_at, "records": doc.get("records"),
                           "bytes": doc.get("bytes"), "landings": doc.get("landings"), "deadline": deadline,
                           "late_seconds": _lateness(landed_at, deadline, now) if landed_at or now > deadline else 0,
                           "invalidated": bad.get(p), "instance": None})
    _attach_instances(services, producers, policy, partitions)
    upstream = list(dict.fromkeys([*policy.upstream, *(summary_doc.get("upstream_all") or [])]))
    return {"name": name, "owner": rec.owner, "description": model.metadata.description, "spec": model.spec,
            "policy": policy, "row": row, "partitions": partitions, "alerts": open_alerts(services, name),
            "producers": producers, "consumers": consumers, "upstream": upstream, "downstream": downstream,
            "before": before, "older": shown[-1] if len(shown) >= PARTITIONS_SHOWN else None}


def _attach_instances(services: Services, producers: list[dict[str, Any]], policy: domain.Policy,
                      partitions: list[dict[str, Any]]) -> None:
    """Each partition's instance of the (first) producing workflow: one batched read."""
    if not producers or not partitions:
        return
    workflow = producers[0]["workflow"]
    rec = services.manifests.get("Workflow", workflow)
    if rec is None:
        return
    model = rec.model_as(Workflow)
    cadence = model.spec.cadence()
    params = {p["partition"]: cadence.format(cadence.floor(policy.cadence.parse(p["partition"])))
              for p in partitions}
    found = services.store.get_many(INSTANCES, [m.instance_id(workflow, v) for v in params.values()])
    for p in partitions:
        doc = found.get(m.instance_id(workflow, params[p["partition"]]))
        if doc is not None:
            p["instance"] = instance_view(run_from_doc(doc))


# -- workflows ----------------------------------------------------------------------------------------

def workflows(services: Services, owner: str | None = None, after: str | None = None, limit: int = PAGE) -> Page:
    """One page of workflows by name, each with its next natural trigger and the states of its last
    instances (a strip, newest on the right, so a failing workflow stands out): one batched read of
    the next runs and one query of at most ``LAST_RUNS_SHOWN`` instances per workflow shown."""
    from ferry.styx.overview import last_runs, next_runs

    page, cursor = services.manifests.list("Workflow", owner, limit=limit, after=after)
    nxt = next_runs(services.store, [r.name for r in page])
    items = []
    for rec in page:
        spec = rec.manifest.get("spec", {})
        last = last_runs(services.store, rec.name, LAST_RUNS_SHOWN)
        items.append({"name": rec.name, "owner": rec.owner, "schedule": spec.get("schedule"),
                      "produces": spec.get("produces"), "depends_on": spec.get("depends_on") or [],
                      "enabled": spec.get("enabled", True), "image": spec.get("image"), **nxt[rec.name],
                      "last_runs": last[::-1], "failing": bool(last) and last[0]["state"] == "ERROR"})
    return Page(items, cursor)


def workflow(services: Services, name: str, limit: int = PAGE) -> dict[str, Any]:
    """A workflow's page: its spec, its newest instances (one page) and its backfills with progress.

    Raises:
        NotFound: no such workflow.
    """
    rec = services.manifests.get("Workflow", name)
    if rec is None:
        raise NotFound(f"workflow {name!r} not found")
    model = rec.model_as(Workflow)
    rows = services.store.query(INSTANCES, [Where("workflow", "==", name)], order_by="parameter", descending=True,
                                limit=limit)
    instances = [instance_view(run_from_doc(d)) for _, d in rows]
    backfills = [_backfill_progress(services, d) for _, d in services.store.query(
        BACKFILLS, [Where("workflow", "==", name)], limit=20)]
    backfills.sort(key=lambda b: str(b["created_at"]), reverse=True)
    return {"name": name, "owner": rec.owner, "spec": model.spec, "description": model.metadata.description,
            "instances": instances, "grid": run_grid(instances),
            "backfills": backfills}


BACKFILL_COUNTED = 500  # a backfill's instances are counted one by one up to this size


def _backfill_progress(services: Services, bf: dict[str, Any]) -> dict[str, Any]:
    total = len(bf["partitions"])
    counts: dict[str, int] = {}
    if total <= BACKFILL_COUNTED:
        started = bf["partitions"][:bf["next_index"]]
        runs = services.store.get_many(INSTANCES, [m.instance_id(bf["workflow"], p) for p in started])
        # failed instances re-queued by `backfill retry` wait for a slot: not finished
        retrying = set((bf.get("retries") or [])[bf.get("retry_index", 0):]) if bf["state"] == "active" else set()
        for d in runs.values():
            if d.get("backfill") == bf["id"]:
                state = "PENDING" if d["state"] == "ERROR" and d.get("parameter") in retrying else d["state"]
                counts[state] = counts.get(state, 0) + 1
    finished = counts.get("DONE", 0) + counts.get("ERROR", 0)
    return {"id": bf["id"], "workflow": bf["workflow"], "start": bf["start"], "end": bf["end"], "state": bf["state"],
            "total": total, "triggered": bf["next_index"], "finished": finished, "counts": counts,
            "percent": int(100 * (finished if counts else bf["next_index"]) / max(1, total)),
            "created_at": bf.get("created_at"), "description": bf.get("description", ""),
            "group": bf.get("group")}


def instance(services: Services, workflow: str, parameter: str, execution: str | None = None) -> dict[str, Any]:
    """One instance: its timeline (triggers, executions with exit codes and durations) and the log
    lines of one execution (the latest by default) — read through Styx's own timeline and logs, so
    the page shows what ``ferry timeline`` and ``ferry logs`` would.

    Raises:
        NotFound: no such instance.
    """
    styx = services.styx
    timeline = styx.timeline(workflow, parameter)
    for t in timeline["triggers"]:
        for x in t["executions"]:
            ran = [s["ran_seconds"] for s in x["statuses"] if s.get("ran_seconds") is not None]
            ats = [datetime.fromisoformat(s["at"]) for s in x["statuses"] if s.get("at")]
            # the job's own run time when the launcher told it; else from submission to the last status seen
            x["duration_seconds"] = int(ran[-1]) if ran else \
                int((ats[-1] - ats[0]).total_seconds()) if len(ats) > 1 else None
            x["duration_measured"] = bool(ran)
    lines: list[str] = []
    shown, log_error = execution or timeline["instance"]["execution_id"], None
    try:
        logs = styx.logs(workflow, parameter, LOG_LINES, execution)
        lines, shown = logs["lines"], logs["execution_id"]
    except NotFound:
        pass  # no execution yet
    except FerryError as exc:  # the page still shows the timeline without its logs
        log_error = exc.message
    rec = services.manifests.get("Workflow", workflow)
    return {"instance": timeline["instance"], "triggers": timeline["triggers"], "execution": shown,
            "lines": lines, "log_error": log_error, "owner": rec.owner if rec else None}


# -- event types --------------------------------------------------------------------------------------

def event_types(services: Services, now: datetime, after: str | None = None, limit: int = PAGE) -> Page:
    """One page of event types with delivery rate, backlog and workers (the scaler's last decision),
    the next partition to close, and what the last hour's delivery runs dead-lettered."""
    page, cursor = services.manifests.list("EventType", None, limit=limit, after=after)
    return Page([_event_type_row(services, rec, now) for rec in page], cursor)


def _event_type_row(services: Services, rec: Any, now: datetime) -> dict[str, Any]:
    from ferry.gabo.state import CURSORS, RUNS, SCALING

    store = services.store
    model = rec.model_as(EventType)
    decision = store.query(SCALING, [Where("event_type", "==", rec.name), Where("at", ">=", now - timedelta(days=1))],
                           order_by="at", descending=True, limit=1)
    runs = [d for _, d in store.query(RUNS, [Where("event_type", "==", rec.name),
                                             Where("updated_at", ">=", now - timedelta(hours=1))],
                                      order_by="updated_at", limit=50)]
    last = decision[0][1] if decision else {}
    inputs = last.get("inputs") or {}
    written = sum(int(r.get("written") or 0) for r in runs)
    return {"name": rec.name, "owner": rec.owner, "partitioning": model.spec.partitioning,
            "rate_per_minute": round(written / 60, 1), "backlog": inputs.get("backlog"),
            "workers": last.get("workers"), "scale_reason": last.get("reason"),
            "next_to_close": (store.get(CURSORS, rec.name) or {}).get("next"),
            "dead_lettered": sum(int(r.get("dead_lettered") or 0) for r in runs),
            "quarantine_topic": f"gabo-{rec.name}-quarantine"}


def _table_of(g: Any, et: Any) -> dict[str, Any]:
    """The type's table: its columns (from the schema) and a few rows of its newest closed period (the
    local stack's sink; a deployment's rows are BigQuery's, not sampled here)."""
    from ferry.gabo.tables import columns, query

    cols = columns.columns(et.spec.schema_)
    out: dict[str, Any] = {"table": f"{query.DATASET}.{query.table_name(et.name)}", "format": et.spec.format,
                           "columns": [{"name": c.name, "type": c.describe(), "nullable": c.nullable} for c in cols.all],
                           "sample": None}
    try:
        t = f"{query.DATASET}.{query.table_name(et.name)}"
        out["sample"] = query.query_closed(g.sink, {et.name: et.spec.schema_},
                                           f"SELECT * FROM {t} WHERE _period = (SELECT max(_period) FROM {t}) "
                                           "ORDER BY _received_at, _id LIMIT 5").to_dict()
    except Exception as exc:  # not local, or unreadable: the page shows the columns without rows
        out["sample_error"] = f"{type(exc).__name__}: {exc}"
    return out


def event_type(services: Services, name: str, now: datetime) -> dict[str, Any]:
    """One event type: its numbers (as on the list) and samples of what was quarantined and
    dead-lettered, with their reasons (a look at the hold subscriptions; nothing is consumed).

    Raises:
        NotFound: no such event type.
    """

    g = services.gabo
    et, rec = g.event_type(name)
    out: dict[str, Any] = {"name": et.name, "owner": rec.owner, "spec": et.spec,
                           "row": _event_type_row(services, rec, now)}
    out.update(_table_of(g, et))
    for source in ("quarantine", "dead-letter"):
        try:
            out[source] = g.set_aside(name, source, limit=10)
        except Exception as exc:  # the page still shows the numbers without the samples
            out[source] = {"items": [], "more": False, "error": f"{type(exc).__name__}: {exc}"}
    return out


# -- actions' pages: backfills, the backfill launcher, the run grid -------------------------------------

def _styx(services: Services) -> StyxService:
    return services.styx


def backfill(services: Services, bf_id: str) -> dict[str, Any]:
    """A backfill's page: per-partition states (Styx's own ``backfill show``) and the workflow's owner.

    Raises:
        NotFound: no such backfill.
    """
    from ferry.styx import backfills

    out = backfills.show(_styx(services), bf_id)
    rec = services.manifests.get("Workflow", out["workflow"])
    out["owner"] = rec.owner if rec else None
    return out


def backfill_preview(services: Services, workflow_name: str, start: str, end: str, reverse: bool,
                     downstream_of: str | None = None) -> dict[str, Any]:
    """What a backfill of ``workflow_name`` over [start, end) would run — the partitions Styx's own
    check computes (or why it would refuse) — and, with ``downstream_of``, the workflows that depend on
    that endpoint (a reprocessing). Reads the workflow and at most ``NEIGHBOURS`` lineage documents."""
    from ferry.styx import backfills

    rec = services.manifests.get("Workflow", workflow_name)
    if rec is None:
        raise NotFound(f"workflow {workflow_name!r} not found")
    out: dict[str, Any] = {"workflow": workflow_name, "owner": rec.owner, "start": start, "end": end,
                           "reverse": reverse, "downstream_of": downstream_of, "partitions": [], "error": None,
                           "downstream": []}
    if downstream_of:
        out["downstream"] = [i for i, _ in services.store.query(
            LINEAGE, [Where("depends_on", "array_contains", downstream_of)], limit=NEIGHBOURS)]
    if start and end:
        try:
            out["partitions"] = backfills.check(_styx(services), rec.model_as(Workflow), start, end, reverse)
        except FerryError as exc:
            out["error"] = exc.message
    return out


def run_grid(instances: list[dict[str, Any]]) -> dict[str, Any]:
    """Instances × time, as a grid: a row per day (hourly and finer parameters, ``YYYY-MM-DDTHH``) or per
    month (daily, ``YYYY-MM-DD``), a column per hour or day of the month; other parameters one row."""
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    columns: set[str] = set()
    for i in instances:
        p = str(i["parameter"])
        if len(p) >= 13 and p[10] == "T":
            row, col = p[:10], p[11:]
        elif len(p) == 10 and p[4] == "-" and p[7] == "-":
            row, col = p[:7], p[8:]
        else:
            row, col = "", p
        rows.setdefault(row, {})[col] = i
        columns.add(col)
    return {"columns": sorted(columns), "rows": sorted(rows.items(), reverse=True)}


# -- search ------------------------------------------------------------------------------------------

SEARCH_KINDS = (("Endpoint", "endpoints"), ("Workflow", "workflows"), ("EventType", "eventtypes"), ("Team", "teams"))
SEARCH_LIMIT = 20


def search(services: Services, q: str, teams: list[str] | None = None, limit: int = SEARCH_LIMIT) -> dict[str, Any]:
    """Names that start with ``q`` per kind (one range query each, ``limit`` rows), instances by id
    (``workflow@parameter``, or an execution id: one get and one query); with ``teams``, what those
    teams own instead (an owner query per kind and team). Reads are bounded by what is shown."""
    from ferry.store.manifests import collection

    found: dict[str, list[dict[str, Any]]] = {label: [] for _, label in SEARCH_KINDS}
    found["instances"] = []
    q = q.strip()
    for kind, label in SEARCH_KINDS:
        if teams:
            if kind == "Team":
                rows = list(services.store.get_many(collection(kind), teams).items())
            else:  # one query per kind for all the teams (Firestore's ``in`` takes up to MAX_IN values)
                rows = services.store.query(collection(kind), [Where("owner", "in", teams[:MAX_IN])], limit=limit)
        elif q:
            rows = services.store.query(collection(kind), [Where("name", ">=", q), Where("name", "<", q + "\uf8ff")],
                                        order_by="name", limit=limit)
        else:
            rows = []
        found[label] = [{"name": i, "owner": d.get("owner"), "kind": kind} for i, d in rows][:limit]
    if q and not teams:
        ids = [q] if "@" in q else [m.instance_id(*q.split(None, 1))] if " " in q else []
        docs = dict(services.store.get_many(INSTANCES, ids)) if ids else {}
        docs.update(services.store.query(INSTANCES, [Where("execution_id", "==", q)], limit=5))
        found["instances"] = [instance_view(run_from_doc(d)) for d in docs.values()]
    return found


# -- event types over time ------------------------------------------------------------------------------

HISTORY_PERIODS = 24


def event_type_history(services: Services, name: str, cadence: Any, now: datetime,
                       periods: int = HISTORY_PERIODS) -> list[dict[str, Any]]:
    """The type's last ``periods`` periods, oldest first: events delivered into each closed period, how
    many arrived late, duplicates dropped, and the closing delay (closed at − end of the period); one
    batched read of their completion records (``gabo_closed``)."""
    from ferry.gabo.state import CLOSED, closed_id

    starts: list[datetime] = []
    t = cadence.floor(now)
    for _ in range(periods):
        t = cadence.prev(t)
        starts.append(t)
    starts.reverse()
    ids = {closed_id(name, s): s for s in starts}
    found = services.store.get_many(CLOSED, list(ids))
    rows = []
    for s in starts:
        doc = found.get(closed_id(name, s)) or {}
        closed_at = doc.get("closed_at") if doc.get("state") == "closed" else None
        end = cadence.next(s)
        rows.append({"partition": cadence.format(s), "closed": closed_at is not None,
                     "events": int(doc.get("events") or 0), "late": int(doc.get("late") or 0),
                     "duplicates": int(doc.get("duplicates") or 0), "replayed": int(doc.get("replayed_events") or 0),
                     "delay_seconds": int((closed_at - end).total_seconds()) if closed_at else None})
    return rows


def bar_chart(rows: list[dict[str, Any]], key: str, title: str, colour: str, unit: str = "") -> str:
    """A small bar chart as SVG (drawn here, no script): one bar per period, the value on hover, the
    first and last period and the maximum labelled; periods with no value are drawn as gaps."""
    from markupsafe import escape

    width, height, pad, label_h = 480, 90, 4, 16
    values = [r.get(key) for r in rows]
    top = max([v for v in values if v is not None] or [0]) or 1
    bw = (width - 2 * pad) / max(1, len(rows))
    out = [f'<svg class="chart" data-series="{escape(key)}" width="{width}" height="{height + label_h}" '
           f'viewBox="0 0 {width} {height + label_h}" role="img" aria-label="{escape(title)}">',
           f'<title>{escape(title)}</title>']
    for i, (r, v) in enumerate(zip(rows, values, strict=True)):
        if v is None:
            continue
        h = max(1.0, (height - 2 * pad) * v / top) if v else 0
        x, y = pad + i * bw, height - pad - h
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(1.0, bw - 2):.1f}" height="{h:.1f}" fill="{colour}" '
                   f'data-partition="{escape(r["partition"])}" data-value="{v}"><title>{escape(r["partition"])}: '
                   f'{v}{escape(unit)}</title></rect>')
    out.append(f'<text x="{pad}" y="{height + label_h - 3}" font-size="11" fill="#444">{escape(rows[0]["partition"]) if rows else ""}</text>')
    out.append(f'<text x="{width - pad}" y="{height + label_h - 3}" font-size="11" fill="#444" text-anchor="end">'
               f'{escape(rows[-1]["partition"]) if rows else ""}</text>')
    out.append(f'<text x="{pad}" y="12" font-size="11" fill="#444">max {top}{escape(unit)}</text></svg>')
    return "".join(out)
