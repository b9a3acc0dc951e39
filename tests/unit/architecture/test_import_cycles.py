"""The import graph of ``ferry`` has no cycle — type-only imports (``if TYPE_CHECKING:``) included.

When two modules need each other, one of them holds a piece that belongs in a third (STYLE.md, 10).
The graph is grimp's (the library import-linter builds on), read from the source: an edge per
``import`` statement anywhere in a module, function-level and ``TYPE_CHECKING`` imports too. Cycles are
the strongly connected components of more than one module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grimp


def strongly_connected(nodes: Iterable[str], edges: Callable[[str], Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of more than one node, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges(w)))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return sorted(out)


def import_cycles(package: str = "ferry") -> list[list[str]]:
    graph = grimp.build_graph(package, include_external_packages=False, exclude_type_checking_imports=False)
    return strongly_connected(graph.modules, graph.find_modules_directly_imported_by)


def describe(graph: grimp.ImportGraph, component: list[str]) -> list[str]:
    """The import lines that tie a component together (what a reader needs to break it)."""
    members = set(component)
    lines = []
    for importer in component:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            for d in graph.get_import_details(importer=importer, imported=imported):
                lines.append(f"  {importer}:{d['line_number']}: {d['line_contents']}")
    return lines


def test_strongly_connected_finds_a_cycle_and_only_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert strongly_connected(edges, edges.__getitem__) == [["a", "b", "c"]]


def test_the_import_graph_has_no_cycle() -> None:
    graph = grimp.build_graph("ferry", include_external_packages=False, exclude_type_checking_imports=False)
    cycles = strongly_connected(graph.modules, graph.find_modules_directly_imported_by)
    report = [f"{len(c)} modules: {', '.join(c)}\n" + "\n".join(describe(graph, c)) for c in cycles]
    assert not cycles, "import cycles (type-only imports count):\n" + "\n".join(report)
