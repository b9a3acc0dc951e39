"""The control of ``tests/e2e/test_fair_delivery.py``: the same two backlogs, the same work orders
(three of big's, one of small's, budget 50 s) — but published queued by type, as a plain FIFO of orders
would hold them. Small's events must then wait for a whole budget: the e2e test's bound (0.8 of a
budget) fails, so that test can tell fair scheduling from FIFO on this stack."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from e2e.test_fair_delivery import BUDGET_S, backlogs, own_stack, seconds_until_delivered  # noqa: F401
from ferry.broker.base import Message
from ferry.dev.harness import LocalStack
from ferry.gabo.delivery.service import WorkOrder
from ferry.gabo.names import WORK_ORDERS_TOPIC

pytestmark = [pytest.mark.bench, pytest.mark.emulator, pytest.mark.timeout(900)]


def test_orders_queued_by_type_starve_the_small_type(own_stack: LocalStack) -> None:  # noqa: F811
    stack = own_stack
    big, small, sent, sent_at = backlogs(stack)
    fifo = [WorkOrder(event_type=big, budget_s=BUDGET_S, worker=i) for i in range(3)] + [
        WorkOrder(event_type=small, budget_s=BUDGET_S, worker=0)]
    started = time.monotonic()
    stack.services().publisher.publish(WORK_ORDERS_TOPIC, [
        Message(o.model_dump_json().encode(), {"event_type": o.event_type}) for o in fifo])
    after = seconds_until_delivered(stack, small, len(sent[small]), sent_at - timedelta(minutes=2), started)
    print(f"\nfair delivery control: orders queued by type — small delivered after {after} s (budget {BUDGET_S:.0f} s; "
          f"the e2e test requires < {0.8 * BUDGET_S:.0f} s)")
    assert after is None or after >= 0.8 * BUDGET_S
