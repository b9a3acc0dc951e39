"""The API fuzz run with a second seed and 50 examples per operation (issue 23): no server error, no
response that violates /v1/openapi.json — as a member and as anonymous. Too long for ``make test``
(the suite's run, tests/e2e/test_api_fuzz.py, takes its fixed sequence with 8 examples); run it with
``make bench`` or ``pytest tests/bench/test_api_fuzz_bench.py``. Prints the calls and statuses."""

from __future__ import annotations

import os
import time

import pytest
from tests.e2e.test_api_fuzz import MEMBER, _run, api_url  # noqa: F401 - api_url: the module's fixture

pytestmark = pytest.mark.emulator
import schemathesis  # noqa: E402

SEED = int(os.environ.get("FERRY_FUZZ_SEED", "2"))
EXAMPLES = int(os.environ.get("FERRY_FUZZ_BENCH_EXAMPLES", "50"))


@pytest.mark.parametrize("user", [MEMBER, None], ids=["member", "anonymous"])
def test_second_seed_50_examples_no_server_errors(api_url: str, user: str | None) -> None:  # noqa: F811
    schema = schemathesis.openapi.from_url(f"{api_url}/v1/openapi.json")
    headers = {"X-Ferry-User": user} if user else {}
    failures: list[str] = []
    statuses: dict[int, int] = {}
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    calls = sum(_run(op, headers, failures, EXAMPLES, SEED, statuses) for op in operations)
    print(f"\nfuzz seed {SEED}, {EXAMPLES} examples/op, {user or 'anonymous'}: {len(operations)} operations, "
          f"{calls} calls in {time.monotonic() - started:.0f} s, statuses {dict(sorted(statuses.items()))}, "
          f"server errors {sum(n for c, n in statuses.items() if c >= 500)}, failures {len(failures)}")
    assert calls >= 10 * len(operations)
    assert not failures, "\n".join(failures)
