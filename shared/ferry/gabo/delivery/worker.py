"""Run one delivery work order in this process: ``python -m ferry.gabo.delivery.worker TYPE [--budget S] [--now ISO]``.

What the ``deliver`` function does for a work order, as a plain process (local stack, tests, benchmarks).
Prints the delivery report as JSON, with this process's peak resident memory (``peak_rss_mb``) and the CPU
time the work order took in it (``cpu_s``, every thread: what the worker costs whatever the broker's speed).
"""

from __future__ import annotations

import argparse
import json
import time

from ferry.bootstrap import process_services
from ferry.clock import parse_instant
from ferry.gabo.delivery.service import WorkOrder
from ferry.log import peak_rss_mb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ferry.gabo.delivery.worker", description=__doc__)
    p.add_argument("event_type")
    p.add_argument("--budget", type=float, default=50.0)
    p.add_argument("--until-drained", action="store_true")
    p.add_argument("--max-messages", type=int, default=20_000)
    p.add_argument("--max-bytes", type=int, default=64 * 1024 * 1024)
    p.add_argument("--max-age", type=float, default=10.0)
    p.add_argument("--shard-bits", type=int, default=None, help="staging shards per period = 2**bits (default: the type's)")
    p.add_argument("--now", default=None, help="ISO instant this run's clock starts at (local time travel)")
    a = p.parse_args(argv)
    order = WorkOrder(event_type=a.event_type, budget_s=a.budget, until_drained=a.until_drained,
                      max_messages=a.max_messages, max_bytes=a.max_bytes, max_age_s=a.max_age,
                      shard_bits=a.shard_bits)
    now = parse_instant(a.now, "--now") if a.now else None
    g = process_services().gabo
    g.warm()
    cpu = time.process_time()
    report = g.deliver(order, now)
    print(json.dumps({**report.to_dict(), "peak_rss_mb": peak_rss_mb(), "cpu_s": round(time.process_time() - cpu, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
