"""CPU inference speed of the four scrap_cls variants, timed round-robin so a busy shared CPU slows all
of them alike (the per-run numbers in the ablation table were taken at different load).

    python benchmarks/scrap_cls_speed.py [--quick]

Speed does not depend on the weights, so the models are freshly built. Reports the median images/s
over rounds for batch 1 and batch 16 at 112 px (tinynet_e, the ablation's recipe) and 456 px
(efficientnet_b5, the paper's), with 1 torch thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_env import forward_rate, machine, write_section  # noqa: E402
from benchmarks.scrap_cls_common import MARKDOWN, RESULTS  # noqa: E402
from scrapvision.models.clfsef import VARIANTS, ScrapClassifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    host = machine()  # the load at start
    setups = [("tinynet_e", 112, 96, 8)] if args.quick else [("tinynet_e", 112, 96, 8), ("efficientnet_b5", 456, 256, 16)]
    rows = []
    for backbone, size, width, groups in setups:
        models = {v: ScrapClassifier(24, backbone, v, fuse_channels=width, sef_groups=groups).eval() for v in VARIANTS}
        for batch in (1, 16) if backbone == "tinynet_e" else (1,):
            x = torch.randn(batch, 3, size, size)
            repeats = max(1, 16 // batch) if backbone == "tinynet_e" else 1
            for model in models.values():
                forward_rate(model, x, 1, warmup=0)  # warm-up
            samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(2 if args.quick else args.rounds):
                for v, model in models.items():
                    samples[v].append(forward_rate(model, x, repeats, warmup=0))
            for v in VARIANTS:
                rows.append({"backbone": backbone, "size": size, "batch": batch, "variant": v,
                             "img_s_median": round(statistics.median(samples[v]), 2),
                             "params_M": round(sum(p.numel() for p in models[v].parameters()) / 1e6, 3)})
                print(rows[-1], flush=True)
    command = "python benchmarks/scrap_cls_speed.py" + (" --quick" if args.quick else "")
    payload = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "threads": 1, "machine": host,
               "rows": rows}
    name = "scrap_cls_speed_quick" if args.quick else "scrap_cls_speed"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1))
    lines = ["## scrap_cls: CPU inference speed (24 classes)", "",
             f"- Command: `{command}`; date {payload['date']}; {host}; median of round-robin rounds", "",
             "| backbone | input | batch | variant | images/s | params M |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['backbone']} | {r['size']} | {r['batch']} | {r['variant']} | {r['img_s_median']} | {r['params_M']} |"
              for r in rows]
    section = "\n".join(lines) + "\n"
    write_section(MARKDOWN, "scrap_cls:speed", section, quick=args.quick)
    print(section)


if __name__ == "__main__":
    main()
