"""A workflow's job reading its input the way Ferry hands it over: no knowledge of Ferry's layout.

Styx tells an execution, per ``depends_on`` endpoint, where the landed partitions it waited for are
(``FERRY_INPUT_EVENTS_DEMO_CLICK``: their locations, space-separated; ``…_TABLE``: the table
``events.demo_click`` for SQL; all of it as JSON in ``FERRY_INPUTS``). This job reads the Parquet parts
of its partition and prints the events per user. Locally the location is a ``file://`` directory; in
the cloud a ``gs://`` prefix (pyarrow reads both).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter

import pyarrow.dataset as ds
import pyarrow.fs as pafs


def main() -> int:
    inputs = json.loads(os.environ.get("FERRY_INPUTS", "[]"))
    counts: Counter[str] = Counter()
    for item in inputs:
        for location in item["locations"]:
            fs, path = pafs.FileSystem.from_uri(location)
            parts = ds.dataset(path, filesystem=fs, format="parquet", exclude_invalid_files=False,
                               ignore_prefixes=["_", "."])
            for batch in parts.to_batches(columns=["user_id"]):
                counts.update(batch.column(0).to_pylist())
    print(f"inputs: {', '.join(i['endpoint'] + ' ' + ' '.join(i['partitions']) for i in inputs)}")
    for user, n in sorted(counts.items()):
        print(f"user {user}: {n} event(s)")
    print(f"the stack's secret visible: {'FERRY_STACK_SECRET' in os.environ}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
