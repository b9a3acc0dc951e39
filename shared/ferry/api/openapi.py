"""The OpenAPI 3.1 document, generated from the registered routes."""

from __future__ import annotations

import re
from typing import Any

from ferry import __version__
from ferry.api.router import Route

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "details": {}}}},
}


def _path(rule: str) -> tuple[str, list[str]]:
    names: list[str] = []

    def repl(m: re.Match[str]) -> str:
        names.append(m.group(2))
        return "{" + m.group(2) + "}"

    return re.sub(r"<(?:([a-z]+)(?:\([^)]*\))?:)?([a-z_]+)>", repl, rule), names


def document(routes: list[Route]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in routes:
        path, params = _path(r.path)
        for method in r.methods:
            op: dict[str, Any] = {
                "summary": r.summary, "tags": [r.tag],
                "operationId": f"{r.handler.__module__.rsplit('.', 1)[-1]}_{r.handler.__name__}_{method.lower()}",
                "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                               for p in params],
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "default": {"description": "Error", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"}}}},
                },
            }
            if r.body is not None:
                op["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": r.body.model_json_schema()}}}
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Ferry API", "version": __version__,
                 "description": "Datamon, Styx and Gabo: the execution and metadata API of Ferry."},
        "paths": paths,
        "components": {"schemas": {"Error": ERROR_SCHEMA}},
    }
