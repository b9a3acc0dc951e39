"""Schema evolution that never breaks readers: which changes of an event type's schema apply refuses.

Every closed period keeps the columns of the schema it was written with, and the BigQuery table holds
them all; a reader (``ferry query``, a BigQuery query, a Spark job) reads old and new periods through
one table. So a new schema may only **add** optional fields. Refused, per field, with why:

- a typed field **removed** (or made untyped, e.g. wrapped in ``oneOf``): its column exists in every
  earlier period and in the table;
- a field **retyped** (``INT64`` → ``STRING``, a struct's field likewise): earlier periods hold the old
  type under the same name;
- a field **newly required**: earlier periods hold events without it.

In Confluent Schema Registry's terms this is FULL_TRANSITIVE compatibility (every schema can read data
written with every other) and stricter: Confluent lets FULL remove an optional field, Ferry does not,
since its column stays in the table. The escape hatch is explicit and recorded with the manifest: the
label ``ferry-schema-break`` naming the fields (comma-separated) whose break is accepted.
"""

from __future__ import annotations

from typing import Any

from ferry.gabo.tables import columns as c

ESCAPE_LABEL = "ferry-schema-break"


def _walk(cols: tuple[c.Column, ...], prefix: str = "") -> dict[str, c.Column]:
    out: dict[str, c.Column] = {}
    for col in cols:
        path = prefix + col.name
        out[path] = col
        inner = col.item if col.kind == "list" else col
        if inner is not None and inner.kind == "struct":
            out.update(_walk(inner.fields, path + "."))
    return out


def _shape(col: c.Column) -> str:
    """A column's type without its struct fields (those are compared one by one)."""
    if col.kind == "list":
        assert col.item is not None
        return f"LIST<{_shape(col.item)}>"
    return "STRUCT" if col.kind == "struct" else c.SQL_TYPES[col.kind]


def _required(schema: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if not isinstance(schema, dict):
        return out
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    for name in schema.get("required") or []:
        out.add(prefix + str(name))
    for name, sub in (props or {}).items():
        if isinstance(sub, dict) and sub.get("type") == "array":
            sub = sub.get("items")
        out |= _required(sub, f"{prefix}{name}.")
    return out


def breaking_changes(old: Any, new: Any) -> list[tuple[str, str]]:
    """(field path, why) for each change from payload schema ``old`` to ``new`` that readers of the
    periods written with ``old`` would not survive. Pure; empty when ``new`` only adds optional fields."""
    before, after = _walk(c.columns(old).payload), _walk(c.columns(new).payload)
    out: list[tuple[str, str]] = []
    for path, col in before.items():
        if path.rsplit(".", 1)[0] in {p for p, _ in out}:
            continue  # its parent is already reported
        now = after.get(path)
        if now is None:
            out.append((path, f"removed: its column ({col.describe()}) is in every earlier period and the table"))
        elif _shape(now) != _shape(col):
            out.append((path, f"retyped from {_shape(col)} to {_shape(now)}: earlier periods hold {_shape(col)}"))
    for path in sorted(_required(new) - _required(old)):
        out.append((path, "newly required: events of earlier periods do not have it"))
    return out


def allowed(labels: dict[str, str]) -> set[str]:
    """The fields whose breaking change the manifest's escape-hatch label accepts."""
    return {f.strip() for f in labels.get(ESCAPE_LABEL, "").split(",") if f.strip()}
