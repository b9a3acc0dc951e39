"""The lineage graph: endpoints and workflows as nodes, ``upstream``/``depends_on``/``produces`` as
edges, coloured by state and drawn server-side as SVG (no JavaScript, no library).

``neighbourhood`` reads a bounded piece of the graph around one endpoint (or the endpoints of one
page); ``layout`` is pure: columns by longest path from the sources, rows in order of arrival.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ferry.datamon.repository import ENDPOINTS, LINEAGE
from ferry.datamon.views import status_row
from ferry.store.base import Where
from ferry.styx.repository import INSTANCES

if TYPE_CHECKING:
    from ferry.bootstrap import Services

MAX_NODES = 120
FANOUT = 25  # neighbours followed per node and direction


@dataclass
class Graph:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {kind, name, state, href}
    edges: set[tuple[str, str]] = field(default_factory=set)
    truncated: bool = False

    def add(self, kind: str, name: str) -> str:
        nid = f"{kind}:{name}"
        if nid not in self.nodes:
            href = f"endpoints/{quote(name, safe='')}" if kind == "endpoint" else f"workflows/{quote(name, safe='')}"
            self.nodes[nid] = {"id": nid, "kind": kind, "name": name, "state": "pending", "href": href}
        return nid


def neighbourhood(services: Services, roots: list[str], now: datetime, depth: int = 2) -> Graph:
    """The graph within ``depth`` hops (an endpoint -> workflow -> endpoint chain is two) of the
    ``roots`` endpoints, at most ``MAX_NODES`` nodes; reads grow with the nodes drawn."""
    store = services.store
    g = Graph()
    queue = deque((r, 0) for r in roots)
    seen: set[str] = set()
    summaries: dict[str, dict[str, Any]] = {}
    workflow_deps: dict[str, list[str]] = {}
    while queue:
        name, d = queue.popleft()
        if name in seen:
            continue
        if len(g.nodes) >= MAX_NODES:
            g.truncated = True
            break
        seen.add(name)
        doc = store.get(ENDPOINTS, name) or {}
        summaries[name] = doc
        me = g.add("endpoint", name)
        if d >= depth:
            continue
        for up in (doc.get("upstream") or [])[:FANOUT]:
            g.edges.add((g.add("endpoint", up), me))
            queue.append((up, d + 1))
        for wf, spec in store.query(LINEAGE, [Where("produces", "==", name)], limit=FANOUT):
            w = g.add("workflow", wf)
            g.edges.add((w, me))
            workflow_deps[wf] = list(spec.get("depends_on") or [])
            for dep in workflow_deps[wf][:FANOUT]:
                g.edges.add((g.add("endpoint", dep), w))
                queue.append((dep, d + 1))
        for wf, spec in store.query(LINEAGE, [Where("depends_on", "array_contains", name)], limit=FANOUT):
            w = g.add("workflow", wf)
            g.edges.add((me, w))
            if spec.get("produces"):
                g.edges.add((w, g.add("endpoint", spec["produces"])))
                queue.append((spec["produces"], d + 1))
        for down, ddoc in store.query(ENDPOINTS, [Where("upstream", "array_contains", name)], limit=FANOUT):
            g.edges.add((me, g.add("endpoint", down)))
            summaries.setdefault(down, ddoc)
            queue.append((down, d + 1))
    _colour(services, g, summaries, now)
    return g


def _colour(services: Services, g: Graph, summaries: dict[str, dict[str, Any]], now: datetime) -> None:
    """Endpoints by their SLA state; workflows by the state of their newest-changed instance."""
    missing = [n["name"] for n in g.nodes.values() if n["kind"] == "endpoint" and n["name"] not in summaries]
    if missing:
        summaries.update(services.store.get_many(ENDPOINTS, missing))
    for n in g.nodes.values():
        if n["kind"] == "endpoint":
            row = status_row(n["name"], summaries.get(n["name"]) or {}, now)
            n["state"] = row["state"] if row else "pending"
        else:
            rows = services.store.query(INSTANCES, [Where("workflow", "==", n["name"])], order_by="updated_at",
                                        descending=True, limit=1)
            n["state"] = rows[0][1]["state"] if rows else "NEW"


# -- layout and drawing (pure) ------------------------------------------------------------------------

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 190, 34, 70, 18, 16


def layout(g: Graph) -> dict[str, tuple[int, int]]:
    """Column = longest path from a source (cycles broken by visit order); row = order within it."""
    incoming: dict[str, list[str]] = {n: [] for n in g.nodes}
    for a, b in g.edges:
        if a in incoming and b in incoming:
            incoming[b].append(a)
    column: dict[str, int] = {}

    def col(n: str, stack: frozenset[str]) -> int:
        if n in column:
            return column[n]
        ups = [u for u in incoming[n] if u not in stack]
        column[n] = 1 + max((col(u, stack | {n}) for u in ups), default=-1)
        return column[n]

    for n in sorted(g.nodes):
        col(n, frozenset())
    rows: dict[int, int] = {}
    pos = {}
    for n in sorted(g.nodes, key=lambda n: (column[n], g.nodes[n]["name"])):
        c = column[n]
        pos[n] = (PAD + c * (NODE_W + COL_GAP), PAD + rows.get(c, 0) * (NODE_H + ROW_GAP))
        rows[c] = rows.get(c, 0) + 1
    return pos


def svg(g: Graph, colours: dict[str, str], focus: str | None = None) -> str:
    """The graph as an SVG document fragment: each node a link to its page."""
    from markupsafe import escape

    pos = layout(g)
    width = max((x for x, _ in pos.values()), default=0) + NODE_W + PAD
    height = max((y for _, y in pos.values()), default=0) + NODE_H + PAD
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="lineage" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="lineage graph">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#888"/></marker></defs>']
    for a, b in sorted(g.edges):
        if a not in pos or b not in pos:
            continue
        (x1, y1), (x2, y2) = pos[a], pos[b]
        sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2
        mid = (sx + ex) // 2
        out.append(f'<path class="edge" data-from="{escape(a)}" data-to="{escape(b)}" '
                   f'd="M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}" fill="none" stroke="#888" '
                   f'marker-end="url(#arrow)"/>')
    for nid, n in sorted(g.nodes.items()):
        x, y = pos[nid]
        state = str(n["state"])
        fill = colours.get(state, colours.get(state.lower(), "#9e9e9e"))
        rx = 17 if n["kind"] == "workflow" else 3
        stroke = ' stroke="#000" stroke-width="3"' if nid == focus else ""
        label = n["name"] if len(n["name"]) <= 24 else n["name"][:23] + "…"
        out.append(f'<a href="{escape(n["href"])}" class="node" data-node="{escape(nid)}" data-kind="{n["kind"]}" '
                   f'data-state="{escape(state)}"><title>{escape(n["kind"])} {escape(n["name"])}: {escape(state)}'
                   f'</title><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="{rx}" fill="{fill}"{stroke}/>'
                   f'<text x="{x + NODE_W // 2}" y="{y + NODE_H // 2 + 5}" text-anchor="middle" fill="#fff" '
                   f'font-size="12">{escape(label)}</text></a>')
    out.append("</svg>")
    return "".join(out)
