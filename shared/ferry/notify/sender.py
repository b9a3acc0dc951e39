"""HTTP delivery of one body to one channel, with retries on 429/5xx that honour ``Retry-After``."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import tenacity

RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))


@dataclass(frozen=True)
class Sent:
    """The outcome of one delivery: ``ok``, or the last failure and whether a later try may succeed."""

    ok: bool
    status: int | None
    tries: int
    error: str | None = None
    permanent: bool = False
    waits: tuple[float, ...] = ()


class _Retry(Exception):
    def __init__(self, status: int | None, error: str, retry_after: float | None) -> None:
        super().__init__(error)
        self.status, self.error, self.retry_after = status, error, retry_after


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (None when absent or unreadable)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# Worker threads of the POSTs: a try that outlives its deadline is abandoned to its thread (which its
# per-read timeouts end), not waited for.
_POSTS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="notify-post")


class HttpSender:
    """POSTs JSON with ``tries`` attempts per call: exponential backoff with jitter on 429, 5xx and
    transport errors, or exactly the server's ``Retry-After`` when it gives one. A ``Retry-After``
    longer than ``max_retry_after`` ends the call (the caller retries later: Pub/Sub redelivers).

    Each try has a whole deadline (``deadline``, seconds), not only httpx's per-read ``timeout``: a
    webhook that accepts the connection and then trickles (or never finishes) its answer is a failed try
    after ``deadline``, so a call always ends within ``tries × deadline`` plus its backoffs."""

    def __init__(self, client: httpx.Client | None = None, *, tries: int = 3, backoff: float = 0.5,
                 max_backoff: float = 8.0, max_retry_after: float = 30.0, timeout: float = 10.0,
                 deadline: float = 15.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self.tries, self.backoff, self.max_backoff = tries, backoff, max_backoff
        self.max_retry_after, self.timeout, self.sleep = max_retry_after, timeout, sleep
        self.deadline = deadline

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, follow_redirects=False,
                                        limits=httpx.Limits(max_connections=32, max_keepalive_connections=16))
        return self._client

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retry) and exc.retry_after is not None:
            return exc.retry_after
        exp = min(self.max_backoff, self.backoff * 2 ** (state.attempt_number - 1))
        return exp * (0.5 + random.random() / 2)

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        too_long = isinstance(exc, _Retry) and exc.retry_after is not None and exc.retry_after > self.max_retry_after
        return state.attempt_number >= self.tries or too_long

    def post(self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Sent:
        waits: list[float] = []
        tries = 0

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            self.sleep(seconds)

        def once() -> int:
            nonlocal tries
            tries += 1
            attempt = _POSTS.submit(self.client.post, url, json=body, headers=headers)
            try:
                response = attempt.result(timeout=self.deadline)
            except FutureTimeout:
                raise _Retry(None, f"no answer within {self.deadline:g}s", None) from None
            except httpx.TransportError as exc:
                raise _Retry(None, f"{type(exc).__name__}: {exc}", None) from exc
            if response.status_code in RETRYABLE:
                raise _Retry(response.status_code, f"HTTP {response.status_code}: {response.text[:200]}",
                             retry_after_seconds(response.headers.get("Retry-After")))
            return response.status_code

        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(_Retry), wait=self._wait,
                                     stop=self._stop, sleep=sleep, reraise=True)
        try:
            status = retrying(once)
        except _Retry as exc:
            return Sent(False, exc.status, tries, exc.error, False, tuple(waits))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # an invalid URL and the like: retrying cannot help
            return Sent(False, None, tries, f"{type(exc).__name__}: {exc}", True, tuple(waits))
        if 200 <= status < 300:
            return Sent(True, status, tries, None, False, tuple(waits))
        return Sent(False, status, tries, f"HTTP {status} (not retried)", True, tuple(waits))
