"""Run every benchmark in bench/ (files named bench_*.py) and print their figures.

    ./rezcty bench [NAME ...]     # NAME filters by substring, e.g. `./rezcty bench dinov2`

Each benchmark prints its own figures, including the ratio to its plain baseline measured
in the same run. A failing benchmark is reported and the others still run.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    wanted = [a for a in argv if not a.startswith("-")]
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not wanted or any(w in p.stem for w in wanted))
    if not scripts:
        print("no benchmark matched", file=sys.stderr)
        return 1
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        t0 = time.time()
        code = subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode
        print(f"--- {script.stem}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.time() - t0:.1f} s", flush=True)
        if code != 0:
            failed.append(script.stem)
    if failed:
        print(f"\nfailed benchmarks: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
