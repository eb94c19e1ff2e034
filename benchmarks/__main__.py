"""Regenerate benchmarks/RESULTS.md from the benchmark scripts of every head.

    python -m benchmarks assemble     # rebuild RESULTS.md from the sections already in benchmarks/results/
    python -m benchmarks plan         # print what quick and full run, and which recorded rows each keeps
    python -m benchmarks quick        # run the synthetic-data benchmarks (minutes to an hour on 2 CPU cores)
    python -m benchmarks full         # rerun every recorded row (needs ../shared/data; ~17 h on 2 CPU cores)

Each script writes its own section (`benchmarks/results/<head>.md`) with the command, machine, date and
wall time next to its numbers; this module runs the scripts (``benchmarks/plan.py``: the commands RESULTS.md
records) and stitches the sections together.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_env import machine
from benchmarks.plan import PLAN, commands, kept

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

HEADER = """# Benchmark results

Every number below was produced on this project's CI machine kind (2 CPU cores, no GPU) by the command
written next to it, with its date and wall time. Bad numbers are reported as measured. Regenerate with
`python -m benchmarks quick` (synthetic data) or `python -m benchmarks full` (reruns every recorded row, the
real-data runs included); `python -m benchmarks plan` lists what each runs and keeps, and
`python -m benchmarks assemble` only re-stitches the per-head sections in `benchmarks/results/`.
"""


def run(todo: list[str]) -> list[tuple[str, int, float]]:
    done = []
    for command in todo:
        script, *args = command.split()
        if not (ROOT / script).is_file():
            print(f"skip {command}: no such script", file=sys.stderr)
            continue
        start = time.time()
        print(f"$ python {command}", file=sys.stderr, flush=True)
        code = subprocess.call([sys.executable, script, *args], cwd=ROOT)
        done.append((command, code, time.time() - start))
    return done


def assemble(log: list[tuple[str, int, float]] | None = None, host: str = "") -> Path:
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
        lines = ["## This regeneration", "", f"{host}; assembled {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "", "| command | exit | wall s |", "|---|---|---|"]
        lines += [f"| `python {c}` | {code} | {wall:.0f} |" for c, code, wall in log]
        parts.append("\n".join(lines) + "\n")
    target = ROOT / "benchmarks" / "RESULTS.md"
    target.write_text("\n".join(parts))
    return target


def kept_lines(mode: str) -> list[str]:
    """Which recorded rows ``mode`` leaves as they are, each with the command that made it."""
    target = ROOT / "benchmarks" / "RESULTS.md"
    text = target.read_text(encoding="utf-8") if target.is_file() else ""
    return [f"{mode}: keeps the rows of `python {command}` as recorded (not rerun)" for command in kept(text, mode)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("assemble", "plan", "quick", "full"))
    args = parser.parse_args()
    if args.mode == "plan":
        for mode in ("quick", "full"):
            print("\n".join([*(f"{mode}: runs python {c}" for c in commands(mode)), *kept_lines(mode)]))
        return
    log, host = None, ""
    if args.mode != "assemble":
        print("\n".join(kept_lines(args.mode)) or f"{args.mode}: reruns every recorded row", file=sys.stderr)
        host = machine()  # at the start, as every script records it
        log = run(commands(args.mode))
    print(f"wrote {assemble(log, host)}")


if __name__ == "__main__":
    main()
