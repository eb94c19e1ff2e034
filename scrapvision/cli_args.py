"""The ``scrapvision`` command line: one sub-parser per command, each with examples in its ``--help``.

Kept apart from the commands (``cli.py``) and free of torch imports, so that ``--help`` and usage errors
answer at once; a task's own options (``--task X``) are added by importing only that task.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence

from .catalog import CALIBRATIONS

EPILOG = textwrap.dedent(
    """\
    examples:
      scrapvision list
      scrapvision train --task severstal                          # built-in synthetic data, CPU recipe
      scrapvision train --task severstal --config tasks/severstal.yaml --set optim.lr=3e-4 --set train.epochs=20
      scrapvision tune --task severstal --checkpoint runs/severstal/<time>/best.pt --tta hflip
      scrapvision eval --task severstal --checkpoint runs/severstal/<time>/best.pt --data DIR
      scrapvision predict --task severstal --checkpoint best.pt --input DIR --out preds/
      torchrun --nproc_per_node 2 -m scrapvision train --task severstal  # DistributedDataParallel
    """
)


def _recipe(p: argparse.ArgumentParser) -> None:
    """--task, --config and --set: which head and which recipe, for every command that builds a task."""
    p.add_argument("--task", required=True, help="task head (see `scrapvision list`)")
    p.add_argument("--config", metavar="YAML", help="recipe file, e.g. tasks/<task>.yaml (default: built-in CPU recipe)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set optim.lr=3e-4 (repeatable; value read as YAML)")


def _common(p: argparse.ArgumentParser, checkpoint: bool = False) -> None:
    _recipe(p)
    p.add_argument("--data", metavar="DIR", help="dataset folder in the task's layout (default: built-in synthetic data)")
    if checkpoint:
        p.add_argument("--checkpoint", required=True, metavar="CKPT", help="a best.pt / last.pt from `scrapvision train`")
        p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")


def _engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("auto", "torch", "onnx", "openvino"), default="auto",
                   help="auto (default): on CPU, ONNX Runtime or OpenVINO (whichever is installed, agrees with torch "
                   "within 1e-3 on the head's example input and is faster on it) on CKPT.onnx, exported next to CKPT "
                   "on first use; else torch, with a line saying why; on CUDA, torch. torch, onnx (ONNX Runtime) or "
                   "openvino (pip install scrapvision[openvino]) force one. --checkpoint may also name a .onnx file "
                   "from `scrapvision export`")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto (default): fp32, except that --engine auto on a CPU with native bf16 (avx512_bf16 / AMX) "
                   "runs torch or OpenVINO in bf16 where that is at least 1.15x faster than fp32 and within 1%% of "
                   "fp32 on the head's example input (it says so on stderr); fp32: never bf16; bf16: bfloat16 "
                   "arithmetic (outputs differ from fp32 by up to a few %% of their range): torch under autocast (what "
                   "--engine auto then runs), or OpenVINO's bf16 mode with --engine openvino")


def _inference(p: argparse.ArgumentParser, tuned: bool = True) -> None:
    from .tta import TTA_MODES

    p.add_argument("--tta", choices=TTA_MODES, default=None,
                   help="test-time augmentation: average the probabilities of the image and its flips (hflip: "
                   "left-right; hvflip: also up-down; d4: also the 90-degree rotations, 8 passes, square images only) "
                   "(default: the tuned file's, else the config's, else none)")
    if tuned:
        p.add_argument("--untuned", action="store_true",
                       help="ignore CKPT.tuned.yaml (the post-processing `scrapvision tune` chose)")


def build_parser(task_name: str | None = None, command: str | None = None) -> argparse.ArgumentParser:
    """The CLI; a head's own ``predict`` / ``prepare`` options are added (importing the head) only when ``command``
    is one of them or unknown (None), so that `config --task X` and the help of other commands stay free of torch."""
    t = task_name or "severstal"  # the examples in each command's --help name the task asked about
    parser = argparse.ArgumentParser(
        prog="scrapvision",
        description="Industrial vision for metal recycling and steel making: train, evaluate and predict "
        "with pluggable task heads on a shared backbone registry. Everything runs offline.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("list", help="list task heads and backbones", formatter_class=fmt,
                       epilog="example:\n  scrapvision list --timm 'efficientnet*'")
    p.add_argument("--timm", metavar="PATTERN", help="also list timm model names matching PATTERN (e.g. 'resnet*')")

    p = sub.add_parser("config", help="print a task's full config as YAML (the defaults = its CPU recipe)",
                       formatter_class=fmt, epilog="example:\n  scrapvision config --task severstal > my.yaml")
    _recipe(p)

    p = sub.add_parser("train", help="train a task head (one process, or DDP under torchrun)", formatter_class=fmt,
                       epilog=f"examples:\n  scrapvision train --task {t}\n"
                       f"  scrapvision train --task {t} --data /data/{t} --set train.epochs=30\n"
                       f"  scrapvision train --task {t} --resume runs/{t}/20260101-120000\n\n"
                       "Writes runs/<task>/<time>/{config.yaml,metrics.jsonl,metrics.csv,curves.png,run.json,best.pt,last.pt}.")
    _common(p)
    p.add_argument("--out", metavar="DIR", help="run folder (default: <train.out_dir>/<task>/<time>)")
    p.add_argument("--resume", metavar="CKPT|RUN_DIR", help="continue from last.pt of a run (same config)")

    p = sub.add_parser("pretrain", help="self-supervised pretraining of a backbone on unlabeled images "
                       "(= train --task pretrain)", formatter_class=fmt,
                       epilog="examples:\n  scrapvision pretrain --data /plant/photos --set model.backbone=tinynet_e\n"
                       "  scrapvision train --task scrap_cls --data DIR "
                       "--set model.weights=runs/pretrain/<time>/backbone.safetensors\n\n"
                       "Writes runs/pretrain/<time>/{backbone.safetensors,curves.png,best.pt,last.pt,...}.")
    p.add_argument("--data", metavar="DIR[,DIR2]", help="folder(s) of unlabeled images, read recursively "
                   "(default: built-in synthetic scrap images)")
    p.add_argument("--config", metavar="YAML", help="recipe file (default: tasks/pretrain.yaml = built-in)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set model.backbone=resnet18 (repeatable)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: <train.out_dir>/pretrain/<time>)")
    p.add_argument("--resume", metavar="CKPT|RUN_DIR", help="continue from last.pt of a run (same config)")

    p = sub.add_parser("eval", help="score a checkpoint on a dataset", formatter_class=fmt,
                       epilog=f"example:\n  scrapvision eval --task {t} --checkpoint best.pt --data DIR")
    _common(p, checkpoint=True)
    p.add_argument("--out", metavar="JSON", help="also write the metrics to this JSON file")
    p.add_argument("--report", metavar="DIR", help="also write the head's pictures (worst items, overlays, curves) "
                   "to DIR; put DIR inside the run folder and `scrapvision report` shows them")
    p.add_argument("--split", choices=("auto", "held-out", "all"), default="auto",
                   help="what of the data to score: held-out = the test fold or split that training never saw "
                   "(segdec, clip_anomaly: data.fold; scrap_cls: its validation split); all = every labelled "
                   "image; auto (default) = all when --data is another folder than the checkpoint's, else "
                   "held-out")
    _engine(p)
    _inference(p)

    p = sub.add_parser("tune", help="choose post-processing on the validation split (writes CKPT.tuned.yaml)",
                       formatter_class=fmt,
                       epilog=f"example:\n  scrapvision tune --task {t} --checkpoint best.pt --tta hflip\n\n"
                       "severstal: per-class threshold, minimum area, classifier gate; segdec: decision threshold;\n"
                       "clip_anomaly: anomaly threshold. "
                       "eval and predict then use CKPT.tuned.yaml unless --set / --tta override it.")
    _common(p, checkpoint=True)
    _inference(p, tuned=False)

    p = sub.add_parser("predict", help="run a checkpoint on new images and write results", formatter_class=fmt,
                       epilog=f"example:\n  scrapvision predict --task {t} --checkpoint best.pt --input DIR --out preds/")
    _common(p, checkpoint=True)
    p.add_argument("--input", required=True, metavar="PATH", help="image folder, file or CSV (task-specific)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (an interrupted run resumes in it)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per batch (default 8)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="DataLoader worker processes (default 0)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="let a CSV/TXT --input list name files outside its own folder (refused by default)")
    _engine(p)
    _inference(p)

    p = sub.add_parser("export", help="export a checkpoint to ONNX (dynamic batch, metadata inside), optionally int8",
                       formatter_class=fmt,
                       epilog=f"examples:\n  scrapvision export --task {t} --checkpoint best.pt --out {t}.onnx\n"
                       f"  scrapvision predict --task {t} --checkpoint {t}.onnx --input DIR --out preds/\n"
                       f"  scrapvision export --task {t} --checkpoint best.pt --int8 --calibrate 64   # best.int8.onnx\n"
                       f"  scrapvision eval --task {t} --checkpoint best.int8.onnx --data DIR")
    p.add_argument("--task", required=True)
    p.add_argument("--checkpoint", required=True, metavar="CKPT")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--out", metavar="FILE", help="the fp32 graph (default: CKPT with .onnx); --int8 writes X.int8.onnx beside an X.onnx")
    p.add_argument("--int8", action="store_true",
                   help="also write an int8 graph: post-training static quantisation (ONNX Runtime, QDQ, per-channel "
                   "weights) calibrated on --calibrate training items; prints how far its outputs are from fp32")
    p.add_argument("--calibrate", type=int, default=64, metavar="N",
                   help="training items whose activation ranges set the int8 scales (default 64; with --int8)")
    p.add_argument("--calibration", choices=tuple(CALIBRATIONS), default=next(iter(CALIBRATIONS)),
                   help="with --int8: how each activation's int8 range is set from the calibration items: the "
                   "99.999th percentile of its histogram (percentile, the default: a few outliers no longer stretch "
                   "the scale; its outputs were as close to fp32 as minmax's or closer on every head measured), their "
                   "extremes (minmax), or the range that keeps its entropy (entropy)")
    p.add_argument("--data", metavar="DIR", help="with --int8: the dataset to calibrate on (default: the checkpoint's)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch.onnx exporter: torchscript (default; fast) or dynamo (torch.export)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    p = sub.add_parser("prepare", help="turn raw material (e.g. yard video) into a training layout",
                       formatter_class=fmt,
                       epilog="example:\n  scrapvision prepare --task scrap_cls --video yard.mp4 --out crops/")
    _recipe(p)

    p = sub.add_parser("data", help="check a dataset folder before training", formatter_class=fmt,
                       epilog=f"examples:\n  scrapvision data check --task {t} --data DIR\n"
                       f"  scrapvision data check --task {t} --data DIR --sheet sheet.png\n\n"
                       "Reads every image and mask the head would read and prints a summary (images, defect\n"
                       "rate per class, sizes, groups, splits). Exit 0 when the set is usable; exit 2 with one\n"
                       "line per problem otherwise.")
    p.add_argument("action", choices=("check",), help="check: read and validate everything")
    _common(p)
    p.add_argument("--sheet", metavar="PNG", help="also write a contact sheet of images with masks overlaid")

    p = sub.add_parser("report", help="write one self-contained report.html of a run folder", formatter_class=fmt,
                       epilog="example:\n  scrapvision eval --task segdec --checkpoint runs/segdec/<time>/best.pt "
                       "--report runs/segdec/<time>/eval\n  scrapvision report runs/segdec/<time>\n\n"
                       "The page holds the command, the curves, the final metrics, every eval --report folder\n"
                       "inside the run folder, and the config; images are inlined, so it opens with no server.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `scrapvision train`")
    p.add_argument("--eval", dest="eval_dirs", action="append", default=[], metavar="DIR",
                   help="also show an `eval --report` folder kept outside the run folder (repeatable)")
    p.add_argument("--out", metavar="HTML", help="where to write the page (default: RUN_DIR/report.html)")

    p = sub.add_parser("runs", help="list the runs under a folder, newest first", formatter_class=fmt,
                       epilog="example:\n  scrapvision runs\n  scrapvision runs /data/experiments")
    p.add_argument("root", nargs="?", default="runs", metavar="DIR", help="folder of runs (default: runs)")

    if task_name and command in (None, "predict", "prepare"):
        from .api import get_task_class

        cls = get_task_class(task_name)
        cls.add_predict_args(sub.choices["predict"])
        cls.add_prepare_args(sub.choices["prepare"])
    return parser


def command_from_argv(argv: Sequence[str]) -> str | None:
    """The sub-command: the first argument that is not an option (None when there is none)."""
    return next((a for a in argv if not a.startswith("-")), None)


def task_from_argv(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--task" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--task="):
            return arg.split("=", 1)[1]
    return None
