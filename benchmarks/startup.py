"""Start-up time of the command line: ``--help``, a usage error, ``list`` and ``config`` against ``import torch``.

    python benchmarks/startup.py [--rounds 10]

Each command runs as a fresh process, in turns (round robin), so load changes hit all alike; the median of
the rounds is reported. ``--help`` must not import torch or timm (tests/test_startup.py checks it), so it
should take a fraction of ``python -c "import torch"``. Writes the ``startup`` section of results/speed.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_env import machine, now, write_section

RESULTS = Path(__file__).resolve().parent / "results"
COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "scrapvision --help": [sys.executable, "-m", "scrapvision", "--help"],
    "scrapvision train (usage error: no --task)": [sys.executable, "-m", "scrapvision", "train"],
    "scrapvision list": [sys.executable, "-m", "scrapvision", "list"],
    "scrapvision config --task severstal": [sys.executable, "-m", "scrapvision", "config", "--task", "severstal"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    date, host, start = now(), machine(), time.perf_counter()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, argv in COMMANDS.items():
            t = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=False)
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["python -c 'import torch'"])
    lines = ["## Start-up of the command line", "",
             f"- Command: `python benchmarks/startup.py --rounds {args.rounds}`; {date}; wall "
             f"{time.perf_counter() - start:.0f} s; {host}",
             "- Each command a fresh process, in turns; median (min - max) over the rounds.", "",
             "| command | median s | min - max s | / import torch |", "|---|---|---|---|"]
    for name, values in times.items():
        lines.append(f"| `{name}` | {statistics.median(values):.2f} | {min(values):.2f} - {max(values):.2f} | "
                     f"{statistics.median(values) / base:.2f} |")
    lines += ["", "`list` reads the built-in heads and backbones from `scrapvision/catalog.py` (it imports torch only "
              "for plug-in heads or `--timm`). `config` imports only the head's config module "
              "(`scrapvision/heads/<task>_parts/config.py`, free of torch; a plug-in head's config is read from its "
              "Task class, with torch)."]
    write_section(RESULTS / "speed.md", "startup", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
