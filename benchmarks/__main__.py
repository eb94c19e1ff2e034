"""Regenerate benchmarks/RESULTS.md from the benchmark scripts of every head.

    python -m benchmarks assemble     # rebuild RESULTS.md from the sections already in benchmarks/results/
    python -m benchmarks quick        # run the synthetic-data benchmarks (minutes to an hour on 2 CPU cores)
    python -m benchmarks full         # also the real-data runs (needs ../shared/data; hours on 2 CPU cores)

Each script writes its own section (`benchmarks/results/<head>.md`) with the command, machine, date and
wall time next to its numbers; this module runs the scripts and stitches the sections together.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: (section file, quick commands, extra commands of the full mode); commands run from the repo root
PLAN: list[tuple[str, list[str], list[str]]] = [
    ("severstal.md", ["benchmarks/rle_speed.py --quick", "benchmarks/severstal_train.py"], ["benchmarks/rle_speed.py"]),
    ("segdec.md", [], ["benchmarks/segdec_kolektor.py", "benchmarks/segdec_ablation.py"]),
    ("canet.md", ["benchmarks/canet_train_time.py"], ["benchmarks/canet_synthetic.py", "benchmarks/canet_errors.py"]),
    ("scrap_cls.md", ["benchmarks/scrap_cls_prepare.py"],
     ["benchmarks/scrap_cls_ablation.py", "benchmarks/scrap_cls_cv.py --variants baseline,clf,sef,clfsef --seeds 0,1,2,3",
      "benchmarks/scrap_cls_cv.py --variants baseline,clfsef --seeds 4,5,6,7"]),
    ("clip_anomaly.md", ["benchmarks/clip_anomaly_synthetic.py"], ["benchmarks/clip_anomaly_kolektor.py"]),
    ("speed.md", ["benchmarks/speed.py"], []),
]

HEADER = """# Benchmark results

Every number below was produced on this project's CI machine kind (2 CPU cores, no GPU) by the command
written next to it, with its date and wall time. Bad numbers are reported as measured. Regenerate with
`python -m benchmarks quick` (synthetic data) or `python -m benchmarks full` (adds the real-data runs);
`python -m benchmarks assemble` only re-stitches the per-head sections in `benchmarks/results/`.
"""


def run(commands: list[str]) -> list[tuple[str, int, float]]:
    done = []
    for command in commands:
        script, *args = command.split()
        if not (ROOT / script).is_file():
            print(f"skip {command}: no such script", file=sys.stderr)
            continue
        start = time.time()
        print(f"$ python {command}", file=sys.stderr, flush=True)
        code = subprocess.call([sys.executable, script, *args], cwd=ROOT)
        done.append((command, code, time.time() - start))
    return done


def assemble(log: list[tuple[str, int, float]] | None = None) -> Path:
    parts = [HEADER]
    for section, _, _ in PLAN:
        path = RESULTS / section
        if path.is_file():
            text = path.read_text().strip()
            if not text.startswith("# "):
                text = f"# {section.removesuffix('.md')}\n\n{text}"
            # one level deeper, so each head's title becomes a section of RESULTS.md
            text = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
            parts.append(text + "\n")
        else:
            parts.append(f"## {section.removesuffix('.md')}\n\nNot measured yet.\n")
    if log:
        lines = ["## This regeneration", "", f"{platform.machine()}, {os.cpu_count()} cores, "
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "", "| command | exit | wall s |", "|---|---|---|"]
        lines += [f"| `python {c}` | {code} | {wall:.0f} |" for c, code, wall in log]
        parts.append("\n".join(lines) + "\n")
    target = ROOT / "benchmarks" / "RESULTS.md"
    target.write_text("\n".join(parts))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("assemble", "quick", "full"))
    args = parser.parse_args()
    log = None
    if args.mode != "assemble":
        commands = [c for _, quick, _ in PLAN for c in quick]
        if args.mode == "full":
            commands += [c for _, _, full in PLAN for c in full]
        log = run(commands)
    print(f"wrote {assemble(log)}")


if __name__ == "__main__":
    main()
