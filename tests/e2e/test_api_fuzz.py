"""A bounded schemathesis run against a real local API process (functions-framework, the emulators, a
project of its own), as a member of a team and as anonymous: no server error, no response that
violates /v1/openapi.json. Fixed seed and a few examples per operation, so it is fast and repeatable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.emulator
import schemathesis  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MEMBER = "alice@example.com"
EXAMPLES = int(os.environ.get("FERRY_FUZZ_EXAMPLES", "8"))


@pytest.fixture(scope="module")
def api_url(emulators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from ferry.dev.emulators import free_port

    home = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "K_"))}
    env.update({"GOOGLE_CLOUD_PROJECT": f"fuzz-{uuid.uuid4().hex[:8]}", "FERRY_IDENTITY": "header",
                "FERRY_FUNCTION": "api", "FERRY_SINK": f"file://{home}/sink", "FERRY_LOG_DIR": str(home / "logs"),
                "FERRY_LAUNCHER": "local", "FERRY_HOME": str(home), "PYTHONUNBUFFERED": "1"})
    exe = Path(sys.executable).parent / "functions-framework"
    with open(home / "api.log", "wb") as log:
        proc = subprocess.Popen([str(exe), "--source", str(ROOT / "functions" / "main.py"), "--target", "api",
                                 "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                httpx.get(f"{url}/v1/health", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, (home / "api.log").read_text()[-2000:]
                time.sleep(0.2)
        team = {"apiVersion": "ferry/v1", "kind": "Team", "metadata": {"name": "team-a"},
                "spec": {"members": [MEMBER], "admins": [MEMBER]}}
        assert httpx.post(f"{url}/v1/apply", json={"manifests": [team]}, headers={"X-Ferry-User": MEMBER},
                          timeout=120).status_code == 200
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _run(operation, headers: dict[str, str], failures: list[str], examples: int = EXAMPLES,  # type: ignore[no-untyped-def]
         seed: int | None = None, statuses: dict[int, int] | None = None) -> int:
    """Run ``examples`` generated cases of ``operation``; ``seed`` None: the fixed derandomized sequence
    (the suite's run), else that seed's (tests/bench/test_api_fuzz_bench.py, a second seed)."""
    import hypothesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import checks as sc

    calls = 0

    @settings(max_examples=examples, deadline=None, derandomize=seed is None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case) -> None:  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        response = case.call(headers=headers, timeout=60)
        if statuses is not None:
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=[sc.not_a_server_error, sc.response_schema_conformance])
        except BaseException as exc:  # schemathesis raises exception groups
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            failures.append(f"{operation.method.upper()} {operation.path} -> {response.status_code}: "
                            f"{response.text[:300]}")
            raise

    if seed is not None:
        run = hypothesis.seed(seed)(run)
    try:
        run()
    except BaseException as exc:  # recorded in failures; every operation still runs
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
    return calls


@pytest.mark.parametrize("user", [MEMBER, None], ids=["member", "anonymous"])
def test_no_server_errors_and_no_schema_violations(api_url: str, user: str | None) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/v1/openapi.json")
    headers = {"X-Ferry-User": user} if user else {}
    failures: list[str] = []
    calls = sum(_run(result.ok(), headers, failures) for result in schema.get_all_operations())
    assert calls >= 100  # every operation was exercised
    assert not failures, "\n".join(failures)
