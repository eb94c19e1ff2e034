"""Which commands regenerate which results: the plan of ``python -m benchmarks quick|full``.

The plan lists the commands that produced the recorded rows, as RESULTS.md names them, so that ``full``
reruns every row rather than only each script's default settings. ``kept`` names the recorded commands a
mode does not rerun, so that a regeneration says which rows it leaves as they were.
"""

from __future__ import annotations

import re


def probe_spec(size: int, seed: int) -> str:
    """pretrain_probe's spec of the linear-probe recipe (tasks/scrap_cls-probe.yaml) at one input size."""
    return (f"probe:180:data.image_size={size},data.augment=none,optim.lr=0.03,model.dropout=0,loss.entropy_weight=0,"
            f"train.epochs=60:{seed}")


#: the probe recipe with model.image_stats at weight decay 0.05 (the default), 0.5 and 2, seed 0 (pretrain_probe specs)
STATS_SPECS = " ".join(probe_spec(352, 0).replace(":0", f",model.image_stats=true{wd}:0")
                       for wd in ("", ",optim.weight_decay=0.5", ",optim.weight_decay=2"))

#: the probe recipe with model.image_stats, its linear layer fitted as a cross-validated logistic regression
LOGREG_SPEC = ("probe:180:data.image_size=352,data.augment=none,model.dropout=0,loss.entropy_weight=0,"
               "model.image_stats=true,model.probe_fit=logreg,train.epochs=1:0")

#: the probe recipe with the statistics and local binary patterns
LBP_SPEC = probe_spec(352, 0).replace(":0", ",model.image_stats=true,model.image_stats_lbp=true:0")


def inner_folds(spec: str) -> str:
    """``spec`` on each of scrap_cls's 5 folds of the outer fold's training photos (pretrain_probe pools them)."""
    return " ".join(spec.replace(":0", f",data.folds=5,data.fold={k}:0") for k in range(5))


#: the two ways of fitting the probe with statistics and local binary patterns, on the inner folds
GRADIENT_LBP_FOLDS = inner_folds(LBP_SPEC)
LOGREG_LBP_FOLDS = inner_folds(LOGREG_SPEC.replace(":0", ",model.image_stats_lbp=true:0"))


#: (section file, quick commands, extra commands of the full mode); commands run from the repo root.
#: Quick commands are recorded ones too (never a ``--quick`` smoke run, which would replace recorded numbers).
PLAN: list[tuple[str, list[str], list[str]]] = [
    ("severstal.md", ["benchmarks/rle_speed.py", "benchmarks/severstal_train.py"],
     ["benchmarks/severstal_real_cv.py",
      # candidate fine-tuning recipes beside the recorded one (their own sections)
      "benchmarks/severstal_real_cv.py --tag e48 --set train.epochs=48",
      "benchmarks/severstal_real_cv.py --tag weak --image-labels",
      "benchmarks/severstal_real_cv.py --tag weak_e48 --image-labels --set train.epochs=48"]),
    ("segdec.md", [],
     ["benchmarks/segdec_kolektor.py --modes full", "benchmarks/segdec_kolektor.py --modes weak",
      "benchmarks/segdec_kolektor.py --modes mixed10,mixed5", "benchmarks/segdec_kolektor.py --modes full --seed 1",
      "benchmarks/segdec_kolektor.py --modes mixed10 --seed 1",
      "benchmarks/segdec_kolektor.py --modes full --height 704 --width 288",
      "benchmarks/segdec_kolektor.py --report",  # inference speed, after the runs it is reported with
      "benchmarks/segdec_ablation.py --variants all,no_se,no_decay", "benchmarks/segdec_ablation.py --variants no_atrous",
      "benchmarks/segdec_ablation.py --variants no_stop_gradient"]),
    # canet_synthetic.py's bare run does every part, the mask-only one too (recorded as `--only mask_only`)
    ("canet.md", ["benchmarks/canet_train_time.py"], ["benchmarks/canet_synthetic.py", "benchmarks/canet_errors.py",
                                                       # the weight-average runs, plain and under each test-time
                                                       # augmentation
                                                       *(f"benchmarks/canet_errors.py --share 'canet ema=0.999' "
                                                         f"'canet ema=0.999 seed=1' --tta {tta}"
                                                         for tta in ("none", "hflip", "hvflip", "d4")),
                                                       "benchmarks/canet_errors.py --share 'canet ema=0.999 bags=1280'",
                                                       "benchmarks/canet_errors.py --share 'canet ema=0.999 res=192'",
                                                       "benchmarks/canet_errors.py --share 'canet ema=0.999 lambda_m=8' "
                                                       "'canet ema=0.999 lambda_m=40'",
                                                       "benchmarks/canet_errors.py --share 'canet ema=0.999 depth=6' "
                                                       "'canet ema=0.999 depth=6 seed=1'",
                                                       # what the patch features and latent classes tell apart
                                                       "benchmarks/canet_probe.py 'canet ema=0.999 depth=6' "
                                                       "'canet ema=0.999 depth=6 seed=1'",
                                                       "benchmarks/canet_probe.py 'canet ema=0.999' "
                                                       "'canet ema=0.999 seed=1'",
                                                       "benchmarks/canet_synthetic.py --only mask_only --seeds 1",
                                                       "benchmarks/canet_synthetic.py --only mask_only --seeds 1 "
                                                       "--bags 80",
                                                       # CANet from a ViT pretrained on the granule photos
                                                       *(f"benchmarks/canet_pretrain.py --bags 40 --seeds {s} --arms "
                                                         "pretrained --pretrain-epochs 8" for s in (0, 1)),
                                                       "benchmarks/canet_pretrain.py --bags 40 --seeds 0 --arms random"]),
    ("scrap_cls.md", ["benchmarks/scrap_cls_prepare.py", "benchmarks/scrap_cls_speed.py"],
     ["benchmarks/scrap_cls_ablation.py", "benchmarks/scrap_cls_cv.py --variants baseline,clfsef --seeds 0,1,2,3",
      "benchmarks/scrap_cls_cv.py --variants baseline,clfsef --seeds 4,5,6,7",
      "benchmarks/scrap_cls_cv.py --variants clf,sef --seeds 0,1", "benchmarks/scrap_cls_cv.py --variants clf,sef --seeds 2,3"]),
    ("clip_anomaly.md", ["benchmarks/clip_anomaly_synthetic.py"],
     ["benchmarks/clip_anomaly_kolektor.py --layout folder",
      "benchmarks/clip_anomaly_kolektor.py --few-shot 1,4,16 --tta hvflip",
      # candidate recipes beside the recorded one (their own sections)
      "benchmarks/clip_anomaly_kolektor.py --tag ema --tta hvflip --set train.ema_decay=0.99",
      "benchmarks/clip_anomaly_kolektor.py --tag ema_e96 --tta hvflip --epochs 96 --set train.ema_decay=0.99",
      # rows added to the synthetic table after its run (the default's run replaces them)
      "benchmarks/clip_anomaly_synthetic.py --row 'fine-tuned, 1536 scenes x 16 epochs' --set data.n_train=1536",
      "benchmarks/clip_anomaly_synthetic.py --row 'fine-tuned, 384 scenes x 16 epochs' --set data.n_train=384 "
      "--set train.epochs=16",
      "benchmarks/clip_anomaly_synthetic.py --row 'fine-tuned, 768 scenes x 32 epochs' --set train.epochs=32",
      "benchmarks/clip_anomaly_synthetic.py --row 'fine-tuned, 768 scenes x 32 epochs, EMA 0.99' --set train.epochs=32 "
      "--set train.ema_decay=0.99",
      "benchmarks/clip_anomaly_synthetic.py --row 'fine-tuned, 1536 scenes x 32 epochs' --set data.n_train=1536 "
      "--set train.epochs=32"]),
    ("segdec_transfer.md", [], ["benchmarks/segdec_tiles.py --recipes base --folds 0,1", "benchmarks/segdec_tiles.py --recipes pos_weight --folds 0,1",
                                "benchmarks/segdec_tiles.py --recipes augmented",
                                "benchmarks/segdec_tiles.py --recipes pos_weight --size 224",
                                "benchmarks/segdec_tiles.py --recipes native --size 0",
                                "benchmarks/segdec_tiles.py --recipes dice --folds 0,1,2",
                                "benchmarks/segdec_tiles.py --recipes dice --size 224",
                                "benchmarks/segdec_tiles.py --recipes dice_lr03 --size 224"]),
    ("folder_layout_kolektor.md", [], ["benchmarks/folder_layout_kolektor.py --folds 0 --epochs 6",
                                       "benchmarks/folder_layout_dagm.py"]),
    ("pretrain_transfer.md", [], [f"benchmarks/pretrain_transfer.py --seeds {seed} --variants {variant} --pretrain-epochs 60"
                                  for seed in (0, 1, 2, 3) for variant in ("baseline", "clfsef")]
     + ["benchmarks/pretrain_transfer.py --seeds 0 --variants clfsef --pretrain-epochs 20 --snapshots 5,10",
        "benchmarks/pretrain_transfer.py --pretrain-epochs 180 --snapshots 60,120 --threads 1",
        "benchmarks/pretrain_transfer.py --seeds 0 --variants baseline --pretrain-epochs 180 --snapshots 60,120",
        "benchmarks/pretrain_transfer.py --seeds 0 --variants clfsef --pretrain-epochs 180 --snapshots 60,120",
        "benchmarks/pretrain_transfer.py --pretrain-epochs 180 --snapshots 60,120 --seeds 0 --variants baseline,clfsef "
        "--frozen --arms pretrained-frozen",
        "benchmarks/pretrain_transfer.py --seeds 0,1,2,3 --variants baseline,clfsef --pretrain-epochs 180 "
        "--snapshots 60,120 --arms scratch,pretrained --threads 1",
        "benchmarks/pretrain_transfer.py --seeds 1,2,3 --variants baseline,clfsef --pretrain-epochs 180 "
        "--snapshots 60,120 --arms scratch,pretrained --threads 1",
        "benchmarks/pretrain_transfer.py --seeds 0,1,2,3 --variants baseline,clfsef --pretrain-epochs 180 --ema 0.99 "
        "--arms pretrained+ema --threads 1",
        "benchmarks/pretrain_transfer.py --seeds 0,1 --variants baseline,clfsef --pretrain-epochs 180 --ema 0.99 "
        "--arms pretrained+ema --threads 1",
        "benchmarks/pretrain_transfer.py --pretrain-epochs 180 --pretrain-only --tag rerun-2026-12-02",
        "benchmarks/pretrain_transfer.py --pretrain-epochs 180 --seeds 0,1,2,3 --variants baseline,clfsef "
        "--arms pretrained --test-time hflip@128 --tag rerun-2026-12-02",
        *(f"benchmarks/pretrain_transfer.py --pretrain-epochs 180 --variants baseline,clfsef --arms pretrained "
          f"--test-time hflip@128 --tag rerun-2026-12-02 --seeds {seeds}" for seeds in ("0,1", "2,3")),
        # the linear probe on the frozen 540-step backbones (tasks/scrap_cls-probe.yaml's recipe), one seed a process
        *(f"benchmarks/pretrain_transfer.py --pretrain-epochs 180 --variants probe --arms pretrained --seeds {seed} "
          "--image-size 224 --epochs 60 --finetune-set data.augment=none --finetune-set optim.lr=0.03 "
          "--finetune-set model.dropout=0 --finetune-set loss.entropy_weight=0" for seed in range(4)),
        # the same seeds 0-1 again with the probe's feature cache (identical predictions, a tenth of the wall time)
        *(f"benchmarks/pretrain_transfer.py --pretrain-epochs 180 --variants probe --arms pretrained --seeds {seed} "
          "--image-size 224 --epochs 60 --finetune-set data.augment=none --finetune-set optim.lr=0.03 "
          "--finetune-set model.dropout=0 --finetune-set loss.entropy_weight=0 --tag feature-cache" for seed in range(2)),
        # the probe at 352 px, the input size the validation photos of all three folds chose (pretrain_probe --fold)
        *(f"benchmarks/pretrain_transfer.py --pretrain-epochs 180 --variants probe --arms pretrained --seeds {seeds} "
          "--image-size 352 --epochs 60 --finetune-set data.augment=none --finetune-set optim.lr=0.03 "
          "--finetune-set model.dropout=0 --finetune-set loss.entropy_weight=0" for seeds in ("0,1", "2,3")),
        # the same probe on repeated 540-step pretrainings of every fold: the spread between pretraining runs
        *(f"benchmarks/pretrain_transfer.py --pretrain-epochs 180 --variants probe --arms pretrained --seeds {seeds} "
          "--image-size 352 --epochs 60 --finetune-set data.augment=none --finetune-set optim.lr=0.03 "
          "--finetune-set model.dropout=0 --finetune-set loss.entropy_weight=0 --tag rerun-2026-12-03"
          for seeds in ("0,1", "2,3")),
        # ... with the photo's colour and texture statistics beside the pooled stages (model.image_stats), on the
        # pretrained and on random frozen backbones
        *(f"benchmarks/pretrain_transfer.py --pretrain-epochs 180 --variants probe --arms {arm} --seeds {seeds} "
          "--image-size 352 --epochs 60 --finetune-set data.augment=none --finetune-set optim.lr=0.03 "
          "--finetune-set model.dropout=0 --finetune-set loss.entropy_weight=0 --finetune-set model.image_stats=true "
          "--tag image-stats --threads 1" for arm in ("pretrained", "scratch") for seeds in ("0,1", "2,3")),
        # the recipe since 2026-12-03: statistics with local binary patterns, the linear layer a logistic regression
        *(f"benchmarks/pretrain_transfer.py --pretrain-epochs 180 --variants probe --arms {arm} --seeds {seeds} "
          "--image-size 352 --epochs 1 --finetune-set data.augment=none --finetune-set model.dropout=0 "
          "--finetune-set loss.entropy_weight=0 --finetune-set model.image_stats=true "
          "--finetune-set model.image_stats_lbp=true --finetune-set model.probe_fit=logreg --tag lbp-logreg --threads 1"
          for arm in ("pretrained", "scratch") for seeds in ("0,1", "2,3")),
        # ... and on random frozen backbones (the arm scratch): what the probe owes to pretraining
        *(f"benchmarks/pretrain_transfer.py --pretrain-epochs 180 --variants probe --arms scratch --seeds {seed} "
          "--image-size 352 --epochs 60 --finetune-set data.augment=none --finetune-set optim.lr=0.03 "
          "--finetune-set model.dropout=0 --finetune-set loss.entropy_weight=0" for seed in range(2))]),
    ("pretrain_probe.md", [], [
        "benchmarks/pretrain_probe.py --backbones random,20@5,20,60,180@60,180@120,180 --linear 112,160,224 "
        "--finetune baseline:180::0 baseline:60::0 baseline:180@120::0 baseline:180@60::0",
        "benchmarks/pretrain_probe.py --finetune baseline:60::1 baseline:180::1 baseline:60::2 baseline:180::2",
        "benchmarks/pretrain_probe.py --finetune baseline:60:data.image_size=160:0 baseline:60:optim.lr=0.001:0 "
        "baseline:60:data.augment=light:0 baseline:random::0 baseline:60:train.epochs=40:0 "
        "baseline:random:data.image_size=160:0",
        "benchmarks/pretrain_probe.py --finetune " + " ".join(
            f"baseline:180:optim.backbone_lr_scale={scale}:{seed}"
            for scale, seed in [("0.1", 0), ("0", 0), ("0.3", 0), ("0.1", 1), ("0.1", 2), ("0.3", 1), ("0.3", 2)]),
        "benchmarks/pretrain_probe.py --finetune baseline:180:optim.backbone_lr_scale=0:1 "
        "baseline:180:optim.backbone_lr_scale=0:2",
        "benchmarks/pretrain_probe.py --finetune baseline:random::0 "
        "--test-time none@112,hflip@112,none@128,hflip@128,hflip@144",
        "benchmarks/pretrain_probe.py --finetune baseline:180::0 baseline:180::1 baseline:180::2 clfsef:180::0 "
        "clfsef:180::1 clfsef:180::2 --test-time none@112,hflip@112,none@128,hflip@128,none@144,hflip@144,hflip@160",
        # SimCLR's colour-distortion strength 0.5 (data.color_strength) against the 180 rows above
        "benchmarks/pretrain_probe.py --finetune " + " ".join(
            f"{v}:180/data.color_strength=0.5::{s}" for v in ("baseline", "clfsef") for s in range(3))
        + " --test-time none@112,hflip@128",
        # scrap_cls model.variant=probe (frozen backbone, stages 2-4 pooled at 224 px, one linear layer)
        "benchmarks/pretrain_probe.py --finetune probe:180:data.image_size=224,data.augment=none:0 "
        "probe:180:data.image_size=224,data.augment=light:0",
        # the probe recipe (tasks/scrap_cls-probe.yaml) on the colour-strength 1 and 0.5 backbones, flips at test time
        *("benchmarks/pretrain_probe.py --finetune " + " ".join(
            f"probe:{backbone}:data.image_size=224,data.augment=none,optim.lr=0.03,model.dropout=0,"
            f"loss.entropy_weight=0,train.epochs=60:{s}" for s in range(3)) + " --test-time none@224,hflip@224"
          for backbone in ("180", "180/data.color_strength=0.5")),
        # the probe's input size on the validation photos of every fold (--fold K: fold K's pretraining and photos)
        *(f"benchmarks/pretrain_probe.py --fold {fold} --finetune " + " ".join(
            probe_spec(size, seed) for size in sizes for seed in seeds)
          for fold, sizes, seeds in [(1, (224, 288, 160), (0, 1)), (2, (224, 288, 160), (0, 1)),
                                     (0, (288, 160, 352), (0, 1)), (1, (352,), (0, 1)), (2, (352,), (0, 1)),
                                     (0, (448,), (0, 1)), (1, (448,), (0, 1)), (2, (448,), (0,)), (2, (448,), (1,))]),
        # richer frozen features (stage 1, max pooling, mirror images, two sizes) on a repeated pretraining of each fold
        *(f"benchmarks/pretrain_probe.py --fold {fold} --backbones 180 --linear 352,448,176+352,224+448 --features "
          "'stages 2-4,stages 1-4,stages 2-4 avg+max,stages 2-4 flip-averaged' --tag 2026-12-03" for fold in (1, 0, 2)),
        # the photo's colour and texture statistics (model.image_stats) beside stages 2-4, on the same backbones: frozen
        # features, and the probe recipe with them (weight decay 0.05 / 0.5 / 2) against the recipe without them
        *(f"benchmarks/pretrain_probe.py --fold {fold} --backbones 180 --linear 352 --features "
          f"'stages 2-4 + image stats,image stats alone' --finetune {STATS_SPECS} --tag 2026-12-03" for fold in (0, 1)),
        f"benchmarks/pretrain_probe.py --fold 2 --finetune {STATS_SPECS} --tag 2026-12-03",
        "benchmarks/pretrain_probe.py --fold 2 --backbones 180 --linear 352 --features "
        "'stages 2-4 + image stats,image stats alone' --tag 2026-12-03",
        *(f"benchmarks/pretrain_probe.py --fold {fold} --finetune {probe_spec(352, 0)} --tag 2026-12-03"
          for fold in range(3)),
        # ... and that recipe fitted as a logistic regression whose C 5-fold CV on the training photos chooses
        *(f"benchmarks/pretrain_probe.py --fold {fold} --finetune {LOGREG_SPEC} --tag 2026-12-03" for fold in range(3)),
        # local binary patterns beside the statistics (model.image_stats_lbp): frozen features and the probe recipe
        *(f"benchmarks/pretrain_probe.py --fold {fold} --backbones 180 --linear 352 --features "
          f"'stages 2-4 + image stats + LBP,image stats + LBP alone' --finetune {LBP_SPEC} --tag 2026-12-03"
          for fold in (0, 1)),
        # the feature sets by 5-fold CV on all training photos of each outer fold (--inner-cv)
        *(f"benchmarks/pretrain_probe.py --fold {fold} --backbones 180 --linear 352 --features 'stages 2-4,stages 2-4 + "
          "image stats,stages 2-4 + image stats + LBP,image stats alone,image stats + LBP alone' --inner-cv "
          "--tag 2026-12-03" for fold in range(3)),
        # gradient epochs against the logistic regression for the probe with local binary patterns, each on the
        # 5-fold split of every outer fold's training photos (about 660 photos scored in all)
        *(f"benchmarks/pretrain_probe.py --fold {fold} --finetune {specs} --tag 2026-12-03"
          for fold, specs in [(0, f"{GRADIENT_LBP_FOLDS} {LOGREG_LBP_FOLDS}"), (1, f"{GRADIENT_LBP_FOLDS} {LOGREG_LBP_FOLDS}"),
                              (2, GRADIENT_LBP_FOLDS), (2, LOGREG_LBP_FOLDS)])]),
    ("pretrain_transfer_defects.md", [], [f"benchmarks/pretrain_transfer_defects.py --parts {part} --seeds {seed}"
                                          for part, seed in [("kolektor", 0), ("severstal", 0), ("severstal", 1),
                                                             ("severstal", 2), ("severstal", 3), ("kolektor", 1),
                                                             ("kolektor", 2), ("kolektor", 3)]]
     # the shipped tiled recipe (24 epochs), one process per arm side by side at one thread each
     + [f"benchmarks/pretrain_transfer_defects.py --parts kolektor_tiled --seeds 0,1,2,3 --arms {arm}"
        for arm in ("pretrained", "scratch", "simmim")]
     # (a --pretrain-only process filled fold 2's SimMIM cache for the simmim command above)
     + ["benchmarks/pretrain_transfer_defects.py --parts kolektor_tiled --arms simmim",
        # how alike the patch tokens of a tile are, per encoder (random, SimCLR, SimMIM)
        "benchmarks/pretrain_transfer_defects.py --parts token_similarity"]),
    ("speed.md", ["benchmarks/speed.py --seconds 4", "benchmarks/startup.py --rounds 10"],
     [f"benchmarks/int8_accuracy.py --recipe {recipe}" for recipe in ("severstal", "scrap_cls", "segdec", "clip_anomaly")]),
]

# options that only share one run out among processes (folds of segdec_kolektor.py, parts of
# canet_synthetic.py): each process merges into the same rows, which the command without them reproduces
SPLIT_OPTIONS = ("--folds", "--only", "--fold-list")
# options of how a process runs, not of what it measures (torch threads, the folder its JSON goes to): dropped
# like the split options
RUNTIME_OPTIONS = ("--threads", "--results")
# the same, for options without a value (pretrain_transfer.py's --pretrain-only runs a share of the pretrainings)
SPLIT_FLAGS = ("--pretrain-only",)
# a benchmark command in a code span of one line, as the sections write them: `python benchmarks/x.py --a b`
NAMED = re.compile(r"`(?:python )?(benchmarks/\w+\.py[^`\n]*)`")


def commands(mode: str) -> list[str]:
    """The commands ``python -m benchmarks <mode>`` runs, in order."""
    quick = [c for _, q, _ in PLAN for c in q]
    return quick + [c for _, _, full in PLAN for c in full] if mode == "full" else quick


def normalise(command: str) -> str:
    """``command`` without ``python`` and without the options that only split one run among processes."""
    words = command.split()
    words = words[1:] if words[:1] == ["python"] else words
    valued = SPLIT_OPTIONS + RUNTIME_OPTIONS
    kept = [w for i, w in enumerate(words)
            if w not in valued + SPLIT_FLAGS and (i == 0 or words[i - 1] not in valued)]
    return " ".join(kept)


def recorded(results_md: str) -> set[str]:
    """Every benchmark command that RESULTS.md names next to its numbers, normalised."""
    found = set()
    for match in NAMED.finditer(results_md):
        found |= {normalise(part) for part in match.group(1).split("; python ")}  # one span may list several
    return found


def kept(results_md: str, mode: str) -> list[str]:
    """The recorded commands that ``mode`` does not rerun: their rows stay as recorded."""
    return sorted(recorded(results_md) - {normalise(c) for c in commands(mode)})
