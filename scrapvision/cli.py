"""``scrapvision``: list | config | train | pretrain | eval | tune | predict | export | prepare | data | report | runs.

The commands; their arguments live in ``cli_args.py``. Errors are one line and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .cli_args import build_parser, command_from_argv, task_from_argv
from .errors import ScrapvisionError, first_line


def cmd_list(args: argparse.Namespace) -> None:
    """Built-in heads and backbones from the torch-free catalogue; only plug-in heads (entry points) and
    ``--timm`` import what they need."""
    from importlib.metadata import entry_points

    from .catalog import BACKBONE_NAMES, TASK_SUMMARIES

    summaries = dict(TASK_SUMMARIES)
    if entry_points(group="scrapvision.tasks"):  # a plug-in's summary lives in its class: load it
        from . import TASKS
        from .heads import load_all

        load_all()
        summaries.update({name: TASKS.get(name).summary for name in TASKS.names() if name not in summaries})
    print("tasks:")
    for name in sorted(summaries):
        lines = summaries[name].strip().splitlines()
        print(f"  {name:14s} {lines[0] if lines else ''}")
    print("backbones (registered):")
    for name in BACKBONE_NAMES:
        print(f"  {name}")
    if not args.timm:
        print("backbones (timm, features_only): any timm model name, e.g. resnet34, efficientnet_b0, "
              "vit_small_patch8_224  (scrapvision list --timm 'PATTERN' lists them)")
        return
    import timm

    names = timm.list_models(args.timm)
    print(f"backbones (timm, features_only): {len(names)} of {len(timm.list_models())} names match {args.timm!r}")
    for name in names:
        print(f"  {name}")


def cmd_config(args: argparse.Namespace) -> None:
    import importlib

    import yaml

    from .catalog import TASK_CONFIGS
    from .config import load_config, to_dict

    if args.task in TASK_CONFIGS:  # a built-in head: its config module alone, without torch
        module, _, name = TASK_CONFIGS[args.task].partition(":")
        cfg = load_config(getattr(importlib.import_module(module), name), args.config, args.overrides)
    else:  # a plug-in head: its Config lives with its Task
        from .api import build_task

        cfg = build_task(args.task, args.config, args.overrides).cfg
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")


def cmd_train(args: argparse.Namespace) -> None:
    from .api import train
    from .runlog import describe_run

    result = train(args.task, args.config, args.overrides, args.data, run_dir=args.out, resume=args.resume,
                   command=getattr(args, "command_line", None))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: best {result.monitor} = {result.best_metric:.4f}\n{describe_run(result.run_dir)}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    args.task = "pretrain"
    cmd_train(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print("fine-tune any head from it: --set model.weights=<the backbone.safetensors above>")


def _load(args: argparse.Namespace):
    from .api import load_engine
    from .tuning import tuned_path

    tuned = not args.untuned
    loaded = load_engine(args.task, args.checkpoint, args.overrides, args.data, engine=args.engine,
                         device=args.device, tuned=tuned, tta=args.tta, precision=args.precision)
    if tuned and tuned_path(args.checkpoint).is_file():
        print(f"scrapvision: post-processing tuned on validation: {tuned_path(args.checkpoint)} "
              "(--untuned ignores it)", file=sys.stderr)
    return loaded


def cmd_export(args: argparse.Namespace) -> None:
    from .api import load_trained
    from .export import export_onnx

    if args.calibrate < 1:
        raise ScrapvisionError(f"--calibrate {args.calibrate}: needs at least one training item")
    task, model = load_trained(args.task, args.checkpoint, args.overrides, args.data)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    print(f"wrote {export_onnx(task, model, out, opset=args.opset, exporter=args.exporter)}")
    if args.int8:
        from .quantize import int8_gap, quantize_int8

        int8 = quantize_int8(task, out, args.calibrate, calibration=args.calibration)
        print(f"wrote {int8}\n" + "\n".join(int8_gap(task, out, int8, args.calibrate)))


def _split_overrides(args: argparse.Namespace) -> tuple[list[str], str]:
    """``eval --split``: the ``--set`` values that make the head score all of ``--data`` (``all``; ``auto`` when
    ``--data`` is another folder than the one the checkpoint was trained on), before the user's own ``--set``;
    and the line that says so when ``auto`` chose it."""
    from .api import get_task_class, trained_data_root

    extra = get_task_class(args.task).eval_all_overrides
    if args.split == "held-out" or (args.split == "auto" and (not extra or args.data is None)):
        return list(args.overrides), ""
    if extra is None:
        raise ScrapvisionError(f"--split all: task {args.task} scores its test split; it has no whole-folder mode")
    notice = ""
    if args.split == "auto":
        trained = trained_data_root(args.task, args.checkpoint)
        if trained and Path(trained).resolve() == Path(args.data).resolve():
            return list(args.overrides), ""
        notice = (f"scrapvision eval: --data {args.data} is not the folder the checkpoint was trained on "
                  f"({trained or 'synthetic data'}): scoring every labelled image of it (--split held-out: only "
                  "its held-out fold)")
    return [*extra, *args.overrides], notice


def cmd_eval(args: argparse.Namespace) -> None:
    from .api import evaluate
    from .checkpoint import atomic_write

    args.overrides, notice = _split_overrides(args)
    task, model = _load(args)
    metrics = evaluate(task, model)
    if notice:  # once the data was read: bad input stays one line
        print(notice, file=sys.stderr)
    width = max(len(k) for k in metrics) if metrics else 0
    for key, value in metrics.items():
        print(f"{key:{width}s}  {value:.4f}" if isinstance(value, float) else f"{key:{width}s}  {value}")
    if args.out:
        with atomic_write(args.out, "w") as handle:
            json.dump(metrics, handle, indent=2)
    if args.report:
        from .report import write_eval_report

        print(f"wrote {write_eval_report(task, model, metrics, Path(args.report), args.checkpoint)}")


def cmd_tune(args: argparse.Namespace) -> None:
    from .tuning import tune

    path, doc = tune(args.task, args.checkpoint, args.overrides, args.data, device=args.device, tta=args.tta)
    for key, value in doc["validation"].items():
        text = ", ".join(f"{v:.4f}" for v in value) if isinstance(value, list) else f"{value:.4f}"
        print(f"{key:18s} {text}")
    print(f"wrote {path}")


def cmd_predict(args: argparse.Namespace) -> None:
    task, model = _load(args)
    inputs = Path(args.input)
    if not inputs.exists():
        raise ScrapvisionError(f"--input {inputs}: not found")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScrapvisionError(f"--out {out}: cannot create ({exc.strerror or exc})") from None
    result = task.predict(model, inputs, out, args)
    print(f"wrote {result}")


def cmd_prepare(args: argparse.Namespace) -> None:
    from .api import build_task

    task = build_task(args.task, args.config, args.overrides)
    result = task.prepare(args)
    print(f"wrote {result}")


def cmd_data(args: argparse.Namespace) -> None:
    from .api import build_task
    from .data_check import check

    if not args.data:
        raise ScrapvisionError("data check: --data DIR is required (the folder to check)")
    task = build_task(args.task, args.config, args.overrides, args.data)
    lines, problems = check(task, Path(args.data), Path(args.sheet) if args.sheet else None)
    print("\n".join(lines))
    if problems:
        for line in problems:
            print(f"scrapvision: problem: {line}", file=sys.stderr)
        raise ScrapvisionError(f"data check: {args.data} is not usable as it is (problems listed above)")
    print("usable: yes")


def cmd_report(args: argparse.Namespace) -> None:
    from .report import write_html_report

    print(f"wrote {write_html_report(Path(args.run_dir), [Path(d) for d in args.eval_dirs], args.out)}")


def cmd_runs(args: argparse.Namespace) -> None:
    from .runs import format_table, list_runs

    print(format_table(list_runs(Path(args.root))))


def command_line(argv: Sequence[str]) -> str:
    """The command as a user would type it again (under torchrun: the torchrun line)."""
    prefix = ["scrapvision"]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        prefix = ["torchrun", "--nproc_per_node", os.environ.get("LOCAL_WORLD_SIZE", "?"), "-m", "scrapvision"]
    return shlex.join([*prefix, *argv])


COMMANDS = {"list": cmd_list, "config": cmd_config, "train": cmd_train, "pretrain": cmd_pretrain, "eval": cmd_eval,
            "tune": cmd_tune, "predict": cmd_predict, "export": cmd_export, "prepare": cmd_prepare, "data": cmd_data,
            "report": cmd_report, "runs": cmd_runs}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(task_from_argv(argv), command_from_argv(argv))
        args = parser.parse_args(argv)
        args.command_line = command_line(argv)
        COMMANDS[args.command](args)
        return 0
    except ScrapvisionError as exc:
        print(f"scrapvision: error: {first_line(exc, limit=None)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scrapvision: interrupted; checkpoints written so far are complete", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`scrapvision runs | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except Exception as exc:
        if os.environ.get("SCRAPVISION_DEBUG"):
            raise
        line = first_line(exc)
        where = line if line == type(exc).__name__ else f"{type(exc).__name__}: {line}"
        print(f"scrapvision: internal error ({where}); rerun with SCRAPVISION_DEBUG=1 for the traceback "
              "and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
