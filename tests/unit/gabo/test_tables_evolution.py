"""Schema evolution rules: only optional fields may be added; removals, retypes and new requirements are named."""

from __future__ import annotations

from ferry.gabo.tables.evolution import allowed, breaking_changes

OLD = {"type": "object", "required": ["user_id"], "properties": {
    "user_id": {"type": "string"}, "n": {"type": "integer"},
    "device": {"type": "object", "properties": {"os": {"type": "string"}}},
    "items": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}}}}


def _with(**props: object) -> dict:
    return {**OLD, "properties": {**OLD["properties"], **props}}


def test_additive_changes_pass() -> None:
    assert breaking_changes(OLD, OLD) == []
    assert breaking_changes(OLD, _with(country={"type": "string"})) == []
    assert breaking_changes(OLD, _with(device={"type": "object", "properties": {
        "os": {"type": "string"}, "model": {"type": "string"}}})) == []
    assert breaking_changes(OLD, _with(extra={"oneOf": [{"type": "string"}]})) == []


def test_removed_retyped_and_newly_required_fields_are_named() -> None:
    gone = {**OLD, "properties": {k: v for k, v in OLD["properties"].items() if k != "n"}}
    assert [p for p, _ in breaking_changes(OLD, gone)] == ["n"]
    assert "removed" in breaking_changes(OLD, gone)[0][1]
    retyped = breaking_changes(OLD, _with(n={"type": "string"}))
    assert retyped == [("n", "retyped from INT64 to STRING: earlier periods hold INT64")]
    nested = _with(items={"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "integer"}}}})
    assert [p for p, _ in breaking_changes(OLD, nested)] == ["items.sku"]
    assert [p for p, _ in breaking_changes(OLD, {**OLD, "required": ["user_id", "n"]})] == ["n"]
    untyped = _with(device={"anyOf": [{"type": "object"}]})
    assert [p for p, _ in breaking_changes(OLD, untyped)] == ["device"]  # its fields are not repeated


def test_the_escape_hatch_names_its_fields() -> None:
    assert allowed({"ferry-schema-break": "n, device.os"}) == {"n", "device.os"}
    assert allowed({}) == set()
