"""Start-up time of the command line: how long before a command's first line of output.

Each command runs in a fresh process as a user runs it (`python -m fastnst ...`), with the training
packages made unimportable, as in the light install (`pip install fastnst`). The baseline is what
every command paid before the light install existed: importing torch at start (`python -c "import
torch"`, measured in the same run), and the bare interpreter's start is printed for reference.

    python benchmarks/startup_time.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_light_install import PRELUDE  # noqa: E402  (the training packages made unimportable)


def seconds(argv: list[str], runs: int, cwd: str) -> float:
    """Median wall time of a command, after one untimed run (warm file cache)."""
    times = []
    for i in range(runs + 1):
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, cwd=cwd)
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def light(*args: str) -> list[str]:
    return [sys.executable, "-c", PRELUDE + f"from fastnst.cli import main\nsys.argv = ['fastnst', *{list(args)!r}]\n"
                                             "main()"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cwd:
        base = seconds([sys.executable, "-c", "import torch"], args.runs, cwd)
        bare = seconds([sys.executable, "-c", "pass"], args.runs, cwd)
        rows = {
            "fastnst --help": light("--help"),
            "fastnst stylize missing.jpg (error line)": light("stylize", "missing.jpg", "--model", "starry_night"),
            "fastnst stylize --max-size 0 (bad option)": light("stylize", "x.jpg", "--model", "m", "--max-size", "0"),
            "fastnst models": light("models"),
        }
        print(f"startup_time: CPU {platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}; median of {args.runs} runs after one warm-up; light install simulated")
        print(f"  {'command':<44}{'seconds':>9}{'vs import torch':>17}")
        print(f"  {'python -c pass (the interpreter alone)':<44}{bare:>9.3f}")
        baseline = 'python -c "import torch" (the baseline)'
        print(f"  {baseline:<44}{base:>9.3f}{1.0:>16.2f}x")
        for name, argv in rows.items():
            s = seconds(argv, args.runs, cwd)
            print(f"  {name:<44}{s:>9.3f}{base / s:>16.2f}x", flush=True)


if __name__ == "__main__":
    main()
