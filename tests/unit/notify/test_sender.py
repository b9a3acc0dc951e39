"""HttpSender: retries on 429/5xx and transport errors with backoff, honouring Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx

from ferry.notify.sender import HttpSender, retry_after_seconds

from .conftest import Script

URL = "https://hooks.example.test/x"


def sender(script: Script, sleeps: list[float], **kw: float) -> HttpSender:
    return HttpSender(httpx.Client(transport=httpx.MockTransport(script)), sleep=sleeps.append, **kw)  # type: ignore[arg-type]


def test_retries_5xx_then_succeeds(script: Script, sleeps: list[float]) -> None:
    script.statuses[URL] = [500, 503]
    sent = sender(script, sleeps).post(URL, {"a": 1})
    assert sent.ok and sent.tries == 3 and len(script.requests) == 3
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0  # exponential, jittered


def test_honours_retry_after_on_429(script: Script, sleeps: list[float]) -> None:
    script.statuses[URL] = [429]
    script.headers[URL] = {"Retry-After": "7"}
    sent = sender(script, sleeps).post(URL, {})
    assert sent.ok and sleeps == [7.0]


def test_a_retry_after_beyond_the_limit_ends_the_call(script: Script, sleeps: list[float]) -> None:
    script.statuses[URL] = [429, 429]
    script.headers[URL] = {"Retry-After": "120"}
    sent = sender(script, sleeps, max_retry_after=30).post(URL, {})
    assert not sent.ok and not sent.permanent and sent.tries == 1 and sleeps == [] and sent.status == 429


def test_gives_up_after_its_tries_retryable(script: Script, sleeps: list[float]) -> None:
    script.statuses[URL] = [500] * 5
    sent = sender(script, sleeps, tries=3).post(URL, {})
    assert not sent.ok and not sent.permanent and sent.tries == 3 and sent.status == 500


def test_4xx_is_permanent_and_not_retried(script: Script, sleeps: list[float]) -> None:
    script.statuses[URL] = [404]
    sent = sender(script, sleeps).post(URL, {})
    assert not sent.ok and sent.permanent and sent.tries == 1 and sent.status == 404


def test_transport_errors_are_retried(sleeps: list[float]) -> None:
    calls = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(202)

    sent = HttpSender(httpx.Client(transport=httpx.MockTransport(flaky)), sleep=sleeps.append).post(URL, {})
    assert sent.ok and sent.tries == 2


def test_retry_after_as_http_date() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None) is None
