"""The one table of ``benchmarks/gpu_check.sh``, read from the outputs its steps left in a folder.

python benchmarks/gpu_check_table.py runs/gpu-check 412
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def summary_rows(out: Path) -> list[tuple[str, str, str]]:
    """``(check, result, goal)`` rows; a step that left nothing reads "did not finish"."""
    rows = []
    summary = re.findall(
        r"(\d+ (?:passed|failed|skipped|error).*?) in [\d.]+s", _read(out / "cuda_tests.txt")
    )
    rows.append(("tests marked cuda", summary[-1] if summary else "did not finish", "all pass"))
    m = re.search(
        r"resnet18: ceiling (\d+), facecls (\d+), usual (\d+)", _read(out / "throughput.txt")
    )
    if m:
        a, b, c = map(float, m.groups())
        rows.append(
            ("ResNet-18 224 px batch 256: a / b / c img/s", f"{a:.0f} / {b:.0f} / {c:.0f}", "")
        )
        rows.append(("  b/a", f"{b / a:.2f}", ">= 0.85"))
        rows.append(("  b/c", f"{b / c:.2f}", ">= 6"))
    else:
        rows.append(("throughput (ResNet-18 224 px)", "did not finish", "b/a >= 0.85, b/c >= 6"))
    tta = out / "time_to_accuracy.json"
    for r in json.loads(tta.read_text()) if tta.is_file() else []:
        reached = r["seconds_to_target"]
        got = (
            f"test bal. acc. {r['test_balanced_accuracy']:.3f}; "
            + (f"val target at {reached} s; " if reached is not None else "")
            + f"train {r['train_seconds']} s, wall {r['wall_seconds']} s"
        )
        rows.append(
            (f"LFW-8 112 px {r['run']}", got, f"{r['target']} within 60 s" if r["target"] else "-")
        )
    if not tta.is_file():
        rows.append(("LFW-8 time to accuracy", "did not finish", "0.86 / 0.92 within 60 s"))
    return rows


def gpu_name() -> str:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
    except OSError:
        return "an unknown GPU (no nvidia-smi)"
    return done.stdout.strip() or "an unknown GPU"


def main() -> None:
    out, elapsed = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "?"
    print(f"\nfacecls GPU check on {gpu_name()}, {elapsed} s in all\n")
    print("| check | result | goal |\n|---|---|---|")
    for check, result, goal in summary_rows(out):
        print(f"| {check} | {result} | {goal} |")


if __name__ == "__main__":
    main()
