"""Run every benchmark in turn and print a summary line for each: `make bench`.

Each benchmark starts servers of its own in a temporary folder and prints its figures; see the
docstring at the top of each script for what it measures and the README for the figures measured.
Exit status 1 when any benchmark missed its target or failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("webhook_bench.py", "archive_bench.py", "transcribe_bench.py", "sql_bench.py")


def main() -> int:
    results: list[tuple[str, int, float]] = []
    for name in BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / name)], cwd=HERE.parent)
        results.append((name, code, time.monotonic() - started))
    print("\n=== summary ===")
    for name, code, seconds in results:
        print(f"{name:22} {'ok' if code == 0 else f'exit {code}':8} {seconds:6.0f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
