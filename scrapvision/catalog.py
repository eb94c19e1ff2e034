"""What ``scrapvision list`` and ``scrapvision config`` need without importing torch or timm (seconds on a plant PC):
the built-in heads' one-line summaries, where their configs live, and the backbone names the package registers. The Task classes and the CLIP
backbones take their text and names from here, and ``tests/test_startup.py`` checks that this catalogue
equals the registries once every head is imported, so the two cannot drift apart."""

from __future__ import annotations

#: built-in task name -> the summary its Task class shows (``Task.summary``)
TASK_SUMMARIES = {
    "canet": "Copper content (mass fraction) of a sample of copper-scrap granules from N photos: ViT patch "
             "classes -> area proportions -> density-weighted content (CANet, Zhao et al.).",
    "clip_anomaly": "CLIP-prompted impurity segmentation (copper, plastic, wood, rubber, cans in steel scrap): "
                    "multi-scale patch-text matching, supervised / few-shot / zero-shot (Tanaka et al. 2025).",
    "pretrain": "Self-supervised pretraining (SimCLR or SimMIM) of any backbone on unlabeled images; writes "
                "backbone.safetensors for every head's model.weights.",
    "scrap_cls": "scrap-grade classifier: EfficientNet + CLFSEF (cross-layer fusion, semantic enhancement, KD)",
    "segdec": "Segmentation-decision surface-defect detector (KolektorSDD): full / weak / mixed supervision, "
              "SE + atrous network, constant / dynamic / decay loss balance.",
    "severstal": "4-class steel-strip defect U-Net/FPN with Kaggle RLE, Kaggle Dice and submission writer",
}

#: built-in task name -> ``module:class`` of its config, a module free of torch: ``scrapvision config`` prints the
#: defaults without importing the head (its Task class has the same ``Config``)
TASK_CONFIGS = {name: f"scrapvision.heads.{name}_parts.config:{cls}" for name, cls in [
    ("canet", "CanetConfig"), ("clip_anomaly", "ClipAnomalyConfig"), ("pretrain", "PretrainConfig"),
    ("scrap_cls", "ScrapClsConfig"), ("segdec", "SegDecConfig"), ("severstal", "SeverstalConfig")]}

#: registered CLIP image towers: backbone name -> open_clip model config (``scrapvision.backbones.clip``)
CLIP_BACKBONES = {"clip_vit_b16": "ViT-B-16", "clip_vit_l14_336": "ViT-L-14-336", "clip_scrap_tiny": "scrap-vit-tiny"}

#: every backbone name the package registers (besides any timm model name)
BACKBONE_NAMES = tuple(sorted(["tiny_cnn", *CLIP_BACKBONES]))

#: ``export --calibration`` names (the first is the default) -> ONNX Runtime's CalibrationMethod member names;
#: here so that the CLI's choices and :mod:`scrapvision.quantize` read one list without importing onnxruntime
CALIBRATIONS = {"percentile": "Percentile", "minmax": "MinMax", "entropy": "Entropy"}
