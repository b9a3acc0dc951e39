"""Event payload schemas: checked whole at apply, evaluated at ingest in time linear in the event.

A schema is refused at apply when it is not a valid JSON Schema of its draft, when a ``$ref`` does
not resolve inside the schema (ingest never fetches), or when a regular expression (``pattern``,
``patternProperties``) is not one RE2 accepts. At ingest those expressions run on RE2, whose matching
time is linear in the input, so no event (a 26-character string against ``^(a+)+$``...) can stall a
batch; Python's backtracking ``re`` is never used on event data.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import jsonschema
import re2
from jsonschema import ValidationError as _SchemaViolation
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import specification_with

DEFAULT_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# keywords whose values are data, not subschemas: never walked for $ref or patterns
_DATA_KEYWORDS = frozenset({"const", "enum", "examples", "default"})


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is reported to the user, not logged to stderr
    return options


@functools.lru_cache(maxsize=4096)
def regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2. Raises ValueError when RE2 does not accept it."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"pattern {pattern!r} is not supported by the linear-time engine (RE2): {detail}") from None


def _subschemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every object under ``node`` that may be a schema (skipping literal data), depth first."""
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            yield cur
            stack.extend(v for k, v in cur.items() if k not in _DATA_KEYWORDS)
        elif isinstance(cur, list):
            stack.extend(cur)


# Objects and arrays a schema may nest (its validators recurse per level: at 200 they exhaust Python's
# stack). 160 holds a schema of objects nested 79 deep, beyond the 64 levels an event payload may have.
MAX_SCHEMA_DEPTH = 160


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects and arrays more than ``limit`` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        cur, d = stack.pop()
        children = cur.values() if isinstance(cur, dict) else cur if isinstance(cur, list) else None
        if children is None:
            continue
        if d > limit:
            return True
        stack.extend((v, d + 1) for v in children if isinstance(v, dict | list))
    return False


def check(schema: dict[str, Any]) -> None:
    """Everything that makes ``schema`` unusable at ingest, as one ValueError (at apply).

    Raises:
        ValueError: nested deeper than ``MAX_SCHEMA_DEPTH``, invalid for its draft, an unresolvable
            ``$ref``, or a pattern RE2 refuses.
    """
    if _too_deep(schema, MAX_SCHEMA_DEPTH):
        raise ValueError(f"the schema nests objects and arrays more than {MAX_SCHEMA_DEPTH} deep")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
    except RecursionError:  # a $ref cycle the checker follows, or nesting within the bound but costly
        raise ValueError("the schema could not be checked: it recurses too deeply") from None
    problems: list[str] = []
    for node in _subschemas(schema):
        if isinstance(node.get("pattern"), str):
            _collect(problems, node["pattern"])
        if isinstance(node.get("patternProperties"), dict):
            for p in node["patternProperties"]:
                _collect(problems, p)
            if "unevaluatedProperties" in node:
                problems.append("unevaluatedProperties beside patternProperties is not supported "
                                "(its patterns would run on a backtracking engine)")
    problems.extend(f"$ref {ref!r} does not resolve inside the schema" for ref in _unresolvable_refs(schema))
    if problems:
        raise ValueError("; ".join(problems))


def _collect(problems: list[str], pattern: str) -> None:
    try:
        regex(pattern)
    except ValueError as exc:
        problems.append(str(exc))


def _unresolvable_refs(schema: dict[str, Any]) -> list[str]:
    spec = specification_with(schema.get("$schema", DEFAULT_DIALECT) if isinstance(schema.get("$schema"), str)
                              else DEFAULT_DIALECT, default=specification_with(DEFAULT_DIALECT))
    root = spec.create_resource(schema)
    base = root.id() or ""
    registry: Registry[Any] = Registry().with_resource(base, root)
    bad: list[str] = []
    # (node, resolver) pairs: a nested $id changes the base that its refs resolve against
    stack = [(schema, registry.resolver(base_uri=base))]
    while stack:
        node, resolver = stack.pop()
        if isinstance(node, list):
            stack.extend((v, resolver) for v in node)
            continue
        if not isinstance(node, dict):
            continue
        if node is not schema and isinstance(node.get("$id"), str):
            resolver = resolver.in_subresource(spec.create_resource(node))
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                resolver.lookup(ref)
            except Unresolvable:
                bad.append(ref)
        stack.extend((v, resolver) for k, v in node.items() if k not in _DATA_KEYWORDS)
    return bad


# -- evaluation at ingest: the regular-expression keywords on RE2 ------------------------------------

def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[_SchemaViolation]:
    if validator.is_type(instance, "string") and regex(patrn).search(instance) is None:
        yield _SchemaViolation(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any,
                        schema: Any) -> Iterator[_SchemaViolation]:
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in patterns.items():
        compiled = regex(patrn)
        for k, v in instance.items():
            if compiled.search(k) is not None:
                yield from validator.descend(v, subschema, path=k, schema_path=patrn)


def _additional_properties(validator: Any, aP: Any, instance: Any, schema: Any) -> Iterator[_SchemaViolation]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    compiled = [regex(p) for p in schema.get("patternProperties", {})]
    extras = [k for k in instance if k not in properties and not any(c.search(k) is not None for c in compiled)]
    if validator.is_type(aP, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], aP, path=extra)
    elif not aP and extras:
        listed = ", ".join(repr(e) for e in sorted(extras))
        yield _SchemaViolation(f"Additional properties are not allowed ({listed} unexpected)")


@functools.lru_cache(maxsize=16)
def _linear(cls: Any) -> Any:
    return jsonschema.validators.extend(cls, {"pattern": _pattern, "patternProperties": _pattern_properties,
                                              "additionalProperties": _additional_properties})


def validator(schema: dict[str, Any]) -> Any:
    """A validator of ``schema`` (its own draft) whose regular expressions run on RE2."""
    cls = _linear(jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator))
    return cls(schema, format_checker=cls.FORMAT_CHECKER)
