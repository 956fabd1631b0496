"""Run every benchmark script in turn; each writes its own section of benchmarks/RESULTS.md.

Usage: ``python benchmarks/run_all.py [--only bench_features.py ...]``; each script runs with its defaults
(there is no quick mode here: pass smaller sizes to a script directly). ``bench_online_read.py`` is not
in the list: it reads an existing workspace (``--home``). The machines have 2 cores: run benchmarks one
at a time, on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_features.py",
    "bench_training.py",
    "bench_lookalike.py",
    "bench_serving.py",
    "bench_production.py",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="Scripts to run (default: all present).")
    args = parser.parse_args()
    failed = []
    for name in args.only or SCRIPTS:
        script = HERE / name
        if not script.exists():
            print(f"skip {name}: not present")
            continue
        started = time.perf_counter()
        print(f"=== {name}")
        code = subprocess.call([sys.executable, str(script)])
        print(f"=== {name}: exit {code} in {time.perf_counter() - started:.0f}s")
        if code:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
