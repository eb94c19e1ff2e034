"""`scrapvision --help` answers without importing torch or timm (seconds of start-up on a plant PC)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], [], ["list"], ["config", "--task", "severstal"],
                                  ["config", "--task", "clip_anomaly", "--set", "train.epochs=3"]])
def test_help_list_and_usage_errors_do_not_import_torch(argv):
    code = ("import sys\nfrom scrapvision.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'timm', 'torchvision', 'cv2', 'albumentations') if m in sys.modules]\n"
            "print('heavy:', ','.join(heavy))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "heavy: \n" in done.stdout or done.stdout.rstrip().endswith("heavy:"), done.stdout[-300:] + done.stderr[-300:]


def test_lazy_names_still_import_from_the_package():
    import scrapvision

    assert scrapvision.BACKBONES.names() and callable(scrapvision.create_backbone)
    assert scrapvision.Trainer.__name__ == "Trainer" and scrapvision.Task.__name__ == "Task"
    with pytest.raises(AttributeError):
        scrapvision.no_such_name  # noqa: B018


def test_the_catalogue_that_list_prints_equals_the_registries():
    """`scrapvision list` reads scrapvision/catalog.py instead of importing the heads: every built-in head and
    backbone must be in it, with the summary its class shows."""
    from scrapvision import BACKBONES, TASKS
    from scrapvision.catalog import BACKBONE_NAMES, TASK_SUMMARIES
    from scrapvision.heads import load_all

    load_all()
    built_in = {name: TASKS.get(name) for name in TASKS.names()
                if TASKS.get(name).__module__.startswith("scrapvision.heads.")}
    assert {name: cls.summary for name, cls in built_in.items()} == TASK_SUMMARIES
    ours = {name for name in BACKBONES.names() if BACKBONES.get(name).__module__.startswith("scrapvision.")}
    assert ours == set(BACKBONE_NAMES)


def test_config_prints_each_built_in_head_from_its_torch_free_module(capsys):
    """The catalogue names each head's own Config class, and `config` prints what the Task is built with."""
    import importlib

    import yaml

    from scrapvision import TASKS
    from scrapvision.api import build_task
    from scrapvision.catalog import TASK_CONFIGS
    from scrapvision.cli import main
    from scrapvision.config import to_dict
    from scrapvision.heads import load_all

    load_all()
    built_in = {n for n in TASKS.names() if TASKS.get(n).__module__.startswith("scrapvision.heads.")}
    assert set(TASK_CONFIGS) == built_in
    for name, where in TASK_CONFIGS.items():
        module, _, cls = where.partition(":")
        assert getattr(importlib.import_module(module), cls) is TASKS.get(name).Config
        assert main(["config", "--task", name, "--set", "train.epochs=3"]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed == to_dict(build_task(name, overrides=["train.epochs=3"]).cfg) and printed["train"]["epochs"] == 3
    assert main(["config", "--task", "scrap_cls", "--set", "eval.image_size=-1"]) == 2
    assert "eval.image_size" in capsys.readouterr().err


def test_list_prints_every_catalogued_head(capsys):
    from scrapvision.catalog import TASK_SUMMARIES
    from scrapvision.cli import main

    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    assert all(f"  {name:14s} {summary}" in printed for name, summary in TASK_SUMMARIES.items()), printed


def test_list_shows_plug_in_heads_from_their_classes(monkeypatch, capsys):
    """With an installed plug-in (an entry point of ``scrapvision.tasks``), list loads the registry and prints the
    plug-in's own summary next to the catalogued heads."""
    import importlib.metadata

    import toy_task  # noqa: F401  (registers the "toy" task, as a plug-in's import would)
    from scrapvision.cli import main

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: ["a plug-in"])
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    assert f"  {'toy':14s} {toy_task.ToyTask.summary.strip().splitlines()[0]}" in printed
    assert "  segdec" in printed


def test_a_built_in_head_imports_only_its_own_module():
    """`train/eval/config --task severstal` no longer import the other heads (open_clip, ...); an unknown name
    still loads every head and lists them."""
    code = ("import sys\nfrom scrapvision import get_task\nget_task('severstal')\n"
            "print('heads:', sorted(m for m in sys.modules if m.startswith('scrapvision.heads.') and m.count('.') == 2 and not m.endswith('_parts')))\n"
            "try:\n    get_task('nope')\nexcept Exception as exc:\n    print('error:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "heads: ['scrapvision.heads.severstal']" in done.stdout, done.stdout + done.stderr[-500:]
    assert "unknown task 'nope'; known: canet, clip_anomaly, pretrain, scrap_cls, segdec, severstal" in done.stdout
