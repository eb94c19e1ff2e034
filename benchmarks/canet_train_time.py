"""Wall time and result of the default CPU recipe: ``scrapvision train --task canet`` then ``scrapvision eval``.

    python benchmarks/canet_train_time.py [--quick]

Runs the two CLI commands exactly as a user would (defaults = ``tasks/canet.yaml``; only the run folder is
set), times them, and records the best validation metric and the test-split metrics of ``eval``. Writes
``benchmarks/results/canet_train_time.json`` and the ``canet_train_time`` section of ``canet.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_env import machine, write_section  # noqa: E402
from canet_report import HEADER, MARKDOWN, RESULTS  # noqa: E402


def run(command: list[str]) -> tuple[float, str]:
    """Time one CLI command; ``scrapvision`` is the one beside this Python (a venv need not be activated)."""
    beside = Path(sys.executable).parent / command[0]
    start = time.time()
    try:
        done = subprocess.run([str(beside) if beside.is_file() else command[0], *command[1:]], cwd=REPO,
                              capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit(f"{command[0]}: not found beside {sys.executable} nor on PATH; pip install -e . first") from None
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return time.time() - start, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one epoch on a few bags (smoke test of the script)")
    args = parser.parse_args()
    run_dir = REPO / "runs" / ("bench_canet_default_quick" if args.quick else "bench_canet_default")
    extra = ["--set", "train.epochs=1", "--set", "data.synthetic_train=8", "--set", "data.synthetic_val=4"] \
        if args.quick else []
    shutil.rmtree(run_dir, ignore_errors=True)  # a scratch folder: train refuses to write over a run
    host = machine()  # before training: the load at start
    train_cmd = ["scrapvision", "train", "--task", "canet", "--out", str(run_dir), *extra]
    train_s, train_log = run(train_cmd)
    metrics_json = run_dir / "eval_test.json"
    eval_cmd = ["scrapvision", "eval", "--task", "canet", "--checkpoint", str(run_dir / "best.pt"),
                "--out", str(metrics_json), *extra]
    eval_s, _ = run(eval_cmd)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    best = min(epochs, key=lambda r: r["val_content_mae_pp"])
    report = {
        "train_command": shlex.join(train_cmd), "train_wall_s": round(train_s, 1),
        "eval_command": shlex.join(eval_cmd), "eval_wall_s": round(eval_s, 1),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": f"{host}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "best_epoch": best["epoch"], "best_val": {k: v for k, v in best.items() if k.startswith("val_")},
        "last_epoch": epochs[-1], "test": json.loads(metrics_json.read_text()),
    }
    suffix = "_quick" if args.quick else ""
    (RESULTS / f"canet_train_time{suffix}.json").write_text(json.dumps(report, indent=1))
    if not args.quick:
        t = report["test"]
        write_section(MARKDOWN, "canet_train_time", "\n".join([
            "## Default CPU recipe: `scrapvision train --task canet` (`benchmarks/canet_train_time.py`)",
            "",
            f"- train: `{report['train_command']}` -> **{train_s / 60:.1f} min** wall ({report['date']}, "
            f"{report['machine']}); best epoch {best['epoch']} of {len(epochs)}, val MAE "
            f"{best['val_content_mae_pp']:.2f} pp",
            f"- eval on the held-out synthetic test split: `{report['eval_command']}` ({eval_s:.0f} s)",
            f"- test: content MAE {t['content_mae_pp']:.2f} pp, RMSE {t['content_rmse_pp']:.2f} pp, "
            f"R^2 {t['content_r2']:.3f}, within 1 pp {100 * t['within_1pp']:.0f} %, per-photo copper area MAE "
            f"{t['area_mae_pp']:.2f} pp; trivial area-as-content on the same photos {t['trivial_mae_pp']:.2f} pp",
        ]), header=HEADER)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
