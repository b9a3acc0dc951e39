"""Run one close order in this process: ``python -m ferry.gabo.closing.closeshard ORDER_JSON [--max-part-bytes N]``.

What the ``close-shard`` function does with a message of ``gabo-close-orders``, as a plain process (tests,
benchmarks): merge one shard, record it, complete the period if it was the last. Prints whether this run
completed the period, with this process's peak resident memory (``peak_rss_mb``).
"""

from __future__ import annotations

import argparse
import json

from ferry.bootstrap import process_services
from ferry.gabo.closing.merge import MAX_PART_BYTES
from ferry.gabo.service import decode_close_order
from ferry.log import peak_rss_mb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ferry.gabo.closing.closeshard", description=__doc__)
    p.add_argument("order", help="the close order's JSON {event_type, period, shard, bits, round, now}")
    p.add_argument("--max-part-bytes", type=int, default=MAX_PART_BYTES)
    a = p.parse_args(argv)
    svc = process_services()
    g = svc.gabo
    order = decode_close_order(a.order.encode())
    et, _ = g.event_type(order.event_type)
    closer = g.closer(order.stream)
    closer.max_part_bytes = a.max_part_bytes
    done = closer.run_shard(et, order, order.clock_now(svc.clock, svc.settings.allow_clock_override))
    print(json.dumps({"completed": done.to_dict() if done else None, "peak_rss_mb": peak_rss_mb()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
