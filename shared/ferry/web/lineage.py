"""The lineage graph: endpoints and workflows as nodes, ``upstream``/``depends_on``/``produces`` as
edges, coloured by state and drawn server-side as SVG (no JavaScript, no library).

``neighbourhood`` reads a bounded piece of the graph around one endpoint (or the endpoints of one
page); ``layout`` is pure: columns by longest path from the sources, rows in order of arrival.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ferry.datamon.repository import ENDPOINTS, LINEAGE
from ferry.datamon.views import status_row
from ferry.store.base import MAX_IN, Where
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
    ``roots`` endpoints; no more names are expanded once ``MAX_NODES`` nodes are drawn (``truncated``).

    Read a level at a time: the level's summaries in one batched get, then its producers, consumers and
    downstream endpoints by ``in`` / ``array_contains_any`` queries of ``MAX_IN`` names each (at most
    ``FANOUT`` neighbours per name and direction) — round trips grow with the depth and the nodes drawn,
    reads with the nodes and edges drawn."""
    store = services.store
    g = Graph()
    summaries: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    frontier = list(dict.fromkeys(roots))
    for d in range(depth + 1):
        level = [n for n in frontier if n not in seen]
        if not level:
            break
        if len(g.nodes) >= MAX_NODES:
            g.truncated = True
            break
        seen.update(level)
        wanted = [n for n in level if n not in summaries]
        if wanted:
            found = store.get_many(ENDPOINTS, wanted)
            summaries.update({n: found.get(n) or {} for n in wanted})
        for name in level:
            g.add("endpoint", name)
        if d == depth:
            break
        nxt: list[str] = []
        for name in level:
            me = g.add("endpoint", name)
            for up in (summaries[name].get("upstream") or [])[:FANOUT]:
                g.edges.add((g.add("endpoint", up), me))
                nxt.append(up)
        for chunk in _chunks(level):
            if len(g.nodes) >= MAX_NODES:  # the rest of the level stays as drawn leaves
                g.truncated = True
                break
            nxt += _expand(store, g, chunk, summaries)
        frontier = nxt
    _colour(services, g, summaries, now)
    return g


def _chunks(names: list[str]) -> list[list[str]]:
    return [names[i:i + MAX_IN] for i in range(0, len(names), MAX_IN)]


def _expand(store: Any, g: Graph, chunk: list[str], summaries: dict[str, dict[str, Any]]) -> list[str]:
    """Producers, consumers and downstream endpoints of the ``chunk`` endpoints: three queries. Returns
    the endpoints reached (the next level)."""
    limit = FANOUT * len(chunk)
    names = set(chunk)
    reached: list[str] = []
    per: dict[tuple[str, str], int] = {}

    def room(name: str, direction: str) -> bool:
        per[(name, direction)] = per.get((name, direction), 0) + 1
        return per[(name, direction)] <= FANOUT

    for wf, spec in store.query(LINEAGE, [Where("produces", "in", chunk)], limit=limit):
        if not room(spec["produces"], "producers"):
            continue
        w = g.add("workflow", wf)
        g.edges.add((w, g.add("endpoint", spec["produces"])))
        for dep in list(spec.get("depends_on") or [])[:FANOUT]:
            g.edges.add((g.add("endpoint", dep), w))
            reached.append(dep)
    for wf, spec in store.query(LINEAGE, [Where("depends_on", "array_contains_any", chunk)], limit=limit):
        mine = [n for n in spec.get("depends_on") or [] if n in names and room(n, "consumers")]
        if not mine:
            continue
        w = g.add("workflow", wf)
        for n in mine:
            g.edges.add((g.add("endpoint", n), w))
        if spec.get("produces"):
            g.edges.add((w, g.add("endpoint", spec["produces"])))
            reached.append(spec["produces"])
    for down, ddoc in store.query(ENDPOINTS, [Where("upstream", "array_contains_any", chunk)], limit=limit):
        mine = [n for n in ddoc.get("upstream") or [] if n in names and room(n, "downstream")]
        if not mine:
            continue
        for n in mine:
            g.edges.add((g.add("endpoint", n), g.add("endpoint", down)))
        summaries.setdefault(down, ddoc)
        reached.append(down)
    return reached


def _colour(services: Services, g: Graph, summaries: dict[str, dict[str, Any]], now: datetime) -> None:
    """Endpoints by their SLA state; workflows by the state of their newest-changed instance (one query
    of one document per workflow, a few in flight at once)."""
    missing = [n["name"] for n in g.nodes.values() if n["kind"] == "endpoint" and n["name"] not in summaries]
    if missing:
        summaries.update(services.store.get_many(ENDPOINTS, missing))
    workflows = [n for n in g.nodes.values() if n["kind"] == "workflow"]

    def newest(name: str) -> str:
        rows = services.store.query(INSTANCES, [Where("workflow", "==", name)], order_by="updated_at",
                                    descending=True, limit=1)
        return str(rows[0][1]["state"]) if rows else "NEW"

    with ThreadPoolExecutor(max_workers=8) as pool:
        states = list(pool.map(newest, [n["name"] for n in workflows]))
    for n, state in zip(workflows, states, strict=True):
        n["state"] = state
    for n in g.nodes.values():
        if n["kind"] == "endpoint":
            row = status_row(n["name"], summaries.get(n["name"]) or {}, now)
            n["state"] = row["state"] if row else "pending"


# -- layout and drawing (pure) ------------------------------------------------------------------------

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 190, 34, 70, 18, 16


def ink(fill: str) -> str:
    """Black or white, whichever contrasts more with ``fill`` (#rrggbb): WCAG's relative luminance."""
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (int(fill[i:i + 2], 16) for i in (1, 3, 5))
    lum = 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)
    return "#000" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "#fff"


@dataclass(frozen=True)
class Layout:
    """Where each node sits, and each edge's route: the slots it passes (a long edge goes through empty
    slots of the columns between its ends, so it never crosses a node)."""

    pos: dict[str, tuple[int, int]]
    routes: dict[tuple[str, str], list[tuple[int, int]]]


def layout(g: Graph, sweeps: int = 4) -> Layout:
    """A layered layout (Sugiyama's method, small): column = longest path from a source (cycles broken
    by visit order); an edge longer than one column gets a virtual node in every column between; rows
    within a column ordered by the barycentre of their neighbours, sweeping down and up, so that edges
    cross each other rarely and never cross a node."""
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
    # virtual nodes: one per column strictly between the ends of a forward edge
    chains: dict[tuple[str, str], list[str]] = {}
    up: dict[str, list[str]] = {n: [] for n in g.nodes}
    down: dict[str, list[str]] = {n: [] for n in g.nodes}
    for a, b in sorted(g.edges):
        if a not in column or b not in column or column[b] <= column[a]:
            continue
        chain = [a] + [f"~{a}~{b}~{c}" for c in range(column[a] + 1, column[b])] + [b]
        for i, v in enumerate(chain[1:-1], start=column[a] + 1):
            column[v] = i
            up.setdefault(v, [])
            down.setdefault(v, [])
        for x, y in zip(chain, chain[1:], strict=False):
            down[x].append(y)
            up[y].append(x)
        chains[(a, b)] = chain
    layers: dict[int, list[str]] = {}
    for v in sorted(column, key=lambda v: (g.nodes[v]["name"] if v in g.nodes else v)):
        layers.setdefault(column[v], []).append(v)
    order = {v: i for vs in layers.values() for i, v in enumerate(vs)}
    for sweep in range(sweeps):
        cols = sorted(layers) if sweep % 2 == 0 else sorted(layers, reverse=True)
        for c in cols[1:]:
            near = up if sweep % 2 == 0 else down

            def centre(v: str, near: dict[str, list[str]] = near) -> float:
                ns = near.get(v) or []
                return sum(order[n] for n in ns) / len(ns) if ns else order[v]

            layers[c].sort(key=lambda v: (centre(v), order[v]))
            order.update({v: i for i, v in enumerate(layers[c])})
    slot = {v: (PAD + column[v] * (NODE_W + COL_GAP), PAD + order[v] * (NODE_H + ROW_GAP)) for v in column}
    pos = {n: slot[n] for n in g.nodes}
    routes = {edge: [slot[v] for v in chain] for edge, chain in chains.items()}
    return Layout(pos, routes)


def svg(g: Graph, colours: dict[str, str], focus: str | None = None) -> str:
    """The graph as an SVG document fragment: each node a link to its page."""
    from markupsafe import escape

    plan = layout(g)
    pos = plan.pos
    slots = [xy for route in plan.routes.values() for xy in route] + list(pos.values())
    width = max((x for x, _ in slots), default=0) + NODE_W + PAD
    height = max((y for _, y in slots), default=0) + NODE_H + PAD
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="lineage" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="group" aria-label="lineage graph">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#666"/></marker></defs>']
    for a, b in sorted(g.edges):
        if a not in pos or b not in pos:
            continue
        route = plan.routes.get((a, b))
        if route is None:  # a back edge (a cycle): from the right of a, round to the left of b
            (x1, y1), (x2, y2) = pos[a], pos[b]
            route = [(x1, y1), (x2, y2)]
        (x0, y0), hh = route[0], NODE_H // 2
        cx, cy = x0 + NODE_W, y0 + hh
        d = [f"M {cx} {cy}"]
        for j, (x, y) in enumerate(route[1:], start=1):
            mid = (cx + x) // 2
            d.append(f"C {mid} {cy}, {mid} {y + hh}, {x} {y + hh}")
            if j < len(route) - 1:  # through a virtual slot, level with it
                cx, cy = x + NODE_W, y + hh
                d.append(f"L {cx} {cy}")
        out.append(f'<path class="edge" data-from="{escape(a)}" data-to="{escape(b)}" '
                   f'd="{" ".join(d)}" fill="none" stroke="#666" marker-end="url(#arrow)"/>')
    for nid, n in sorted(g.nodes.items()):
        x, y = pos[nid]
        state = str(n["state"])
        fill = colours.get(state, colours.get(state.lower(), "#9e9e9e"))
        rx = 17 if n["kind"] == "workflow" else 3
        stroke = ' stroke="#000" stroke-width="3"' if nid == focus else ""
        label = n["name"] if len(n["name"]) <= 24 else n["name"][:23] + "…"
        out.append(f'<a href="{escape(n["href"])}" class="node" data-node="{escape(nid)}" data-kind="{n["kind"]}" '
                   f'data-state="{escape(state)}" aria-label="{escape(n["kind"])} {escape(n["name"])}: {escape(state)}">'
                   f'<title>{escape(n["kind"])} {escape(n["name"])}: {escape(state)}'
                   f'</title><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="{rx}" fill="{fill}"{stroke}/>'
                   f'<text x="{x + NODE_W // 2}" y="{y + NODE_H // 2 + 5}" text-anchor="middle" fill="{ink(fill)}" '
                   f'font-size="12">{escape(label)}</text></a>')
    out.append("</svg>")
    return "".join(out)
