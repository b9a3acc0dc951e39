"""The "Reading delivered data" one-liners of docs/gabo.md run as written against a closed period."""

from __future__ import annotations

import contextlib
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from ferry.gabo.tables import parquet

DOCS = Path(__file__).resolve().parents[3] / "docs" / "gabo.md"
SCHEMA = {"type": "object", "properties": {"user_id": {"type": "string"}, "button": {"type": "string"}}}


def one_liners() -> list[str]:
    text = DOCS.read_text()
    block = text[text.index("<!-- reading -->"):text.index("<!-- /reading -->")]
    return re.findall(r"```python\n(.*?)\n```", block, re.S)


def test_the_documented_one_liners_read_a_closed_period(tmp_path: Path) -> None:
    start = datetime(2026, 12, 7, 10, 5, tzinfo=UTC)
    prefix = "events/demo-click/dt=2026-12-07/hour=10/minute=05/"

    def write(key: str, data: bytes) -> None:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(data)
    parts = parquet.ParquetParts(write, prefix, "", SCHEMA, start, 1 << 30)
    for i, user in enumerate(["u1", "u2", "u1"]):
        parts.add(json.dumps({"id": f"c{i}", "type": "demo-click", "time": None,
                              "received_at": "2026-12-07T10:05:01Z", "payload": {"user_id": user}}).encode())
    parts.close()
    write(prefix + "_SUCCESS", json.dumps({"events": 3}).encode())  # never read as data
    code = one_liners()
    assert len(code) == 2
    outputs = []
    for snippet in code:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(snippet, {"SINK": str(tmp_path)})  # noqa: S102 - the documentation's own code
        outputs.append(out.getvalue())
    assert outputs[0].strip() == "[('u1', 2), ('u2', 1)]"
    assert outputs[1].strip() == "[{'user_id': 'u1', 'user_id_count': 2}, {'user_id': 'u2', 'user_id_count': 1}]"
