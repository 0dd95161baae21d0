"""How long the quick commands take: each runs in a fresh process, several times, alternating.

``facecls completion bash`` runs whenever a shell starts completion, so it must answer at once
(issue 24's goal: within 0.3 s); ``--help``, ``--version`` and ``models`` should too. A fresh
interpreter runs each command ``--repeats`` times, commands interleaved so that the machine's
load hits all alike; the script prints the median and the fastest wall time of each, with the
bare interpreter's start (``python -c pass``) for scale and the load average seen.

    PYTHONPATH=src python benchmarks/startup_speed.py [--repeats 15] [--src OTHER/src]

``--src`` times another checkout's ``src`` (e.g. main's, for a before/after figure).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "facecls completion bash": ["-m", "facecls", "completion", "bash"],
    "facecls --version": ["-m", "facecls", "--version"],
    "facecls --help": ["-m", "facecls", "--help"],
    "facecls models": ["-m", "facecls", "models"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    loads = []
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, *argv], env=env, stdout=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - started)
        loads.append(os.getloadavg()[0])
    print(
        f"{platform.machine()} CPU, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"src {args.src}; load average (1 min) {min(loads):.1f}-{max(loads):.1f}"
    )
    print(f"{'command':<26} {'median s':>9} {'fastest s':>10}   ({args.repeats} runs each)")
    for name, values in times.items():
        print(f"{name:<26} {statistics.median(values):>9.3f} {min(values):>10.3f}")


if __name__ == "__main__":
    main()
