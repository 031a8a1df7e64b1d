"""Run every ``benchmarks/bench_*.py`` in turn (``make bench`` calls this).

Each benchmark runs as its own subprocess with this interpreter, one after
another (never in parallel: they time things). ``--quick`` is forwarded, and
so is anything after ``--``. ``-k PATTERN`` runs only the benchmarks whose
file name contains PATTERN. Exits non-zero when any benchmark fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="forward --quick (small smoke runs)")
    ap.add_argument(
        "-k", dest="pattern", default="", help="only benchmarks whose name contains this"
    )
    ap.add_argument(
        "extra", nargs=argparse.REMAINDER, help="arguments after -- go to every benchmark"
    )
    args = ap.parse_args(argv)
    extra = [a for a in args.extra if a != "--"]
    scripts = sorted(p for p in HERE.glob("bench_*.py") if args.pattern in p.name)
    if not scripts:
        print(f"no benchmarks/bench_*.py matching {args.pattern!r}", file=sys.stderr)
        return 1
    failed: list[str] = []
    summary: list[tuple[str, int, float]] = []
    for script in scripts:
        cmd = [sys.executable, str(script), *(["--quick"] if args.quick else []), *extra]
        print(f"\n=== {script.name} {' '.join(cmd[2:])}".rstrip(), flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=HERE.parent)
        dt = time.perf_counter() - t0
        summary.append((script.name, rc, dt))
        if rc != 0:
            failed.append(script.name)
    print("\n=== summary", flush=True)
    for name, rc, dt in summary:
        status = "ok  " if rc == 0 else "FAIL"
        detail = "" if rc == 0 else f", exit code {rc}"
        print(f"{status} {name} ({dt:.0f} s{detail})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
