"""A small Styx job for the local stack and the demo.

It prints what it was given, can sleep, and exits with a chosen code:

    python examples/styx/job.py [PARAMETER] [--exit N] [--sleep SECONDS] [--exit-sequence 20,0]

``--exit-sequence`` picks the code by try (``FERRY_TRIES``): ``20,0`` exits 20 on the first try and 0
after. Env ``JOB_EXIT`` / ``JOB_SLEEP`` / ``JOB_EXIT_SEQUENCE`` do the same (trigger env, ``-e K=V``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("parameter", nargs="?", default=os.environ.get("FERRY_PARAMETER", ""))
    p.add_argument("--exit", type=int, default=int(os.environ.get("JOB_EXIT", "0")))
    p.add_argument("--sleep", type=float, default=float(os.environ.get("JOB_SLEEP", "0")))
    p.add_argument("--exit-sequence", default=os.environ.get("JOB_EXIT_SEQUENCE", ""))
    a = p.parse_args(argv)
    tries = int(os.environ.get("FERRY_TRIES", "1") or 1)
    code = a.exit
    if a.exit_sequence:
        seq = [int(c) for c in a.exit_sequence.split(",")]
        code = seq[min(tries, len(seq)) - 1]
    print(f"job: started_at={time.time():.6f}", flush=True)
    print(f"job: parameter={a.parameter} try={tries} workflow={os.environ.get('FERRY_WORKFLOW')} "
          f"execution={os.environ.get('FERRY_EXECUTION_ID')} trigger={os.environ.get('FERRY_TRIGGER_TYPE')}",
          flush=True)
    for k in sorted(os.environ):
        if k.startswith("MODE") or k.startswith("JOB_"):
            print(f"env {k}={os.environ[k]}", flush=True)
    if a.sleep:
        time.sleep(a.sleep)
    print(f"job: exiting {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
