"""What is never shown: secret references in a workflow's env, payload values in schema errors."""

from __future__ import annotations

import json
import re
from typing import Any

# Secret Manager references: `sm://…`, `secret://…`, or a resource name `projects/P/secrets/S[/versions/V]`.
SECRET_REF = re.compile(r"^(sm://|secret://|projects/[^/]+/secrets/)")
HIDDEN = "<redacted>"


def redact_env(env: dict[str, Any], may_read: bool) -> dict[str, Any]:
    """``env`` as a reader may see it: every value hidden from other teams, secret references from all."""
    return {k: v if may_read and not (isinstance(v, str) and SECRET_REF.match(v)) else HIDDEN for k, v in env.items()}


def schema_reason(where: str, validator: str, constraint: Any) -> str:
    """A schema failure without the payload's value: the field path and the rule it broke."""
    rule = json.dumps(constraint, default=str, separators=(",", ":"))
    return f"schema: {where}: fails {validator} {rule[:200]}"
