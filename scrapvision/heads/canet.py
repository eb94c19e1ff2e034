"""``canet``: copper content (mass fraction) of a stirred sample of copper-scrap granules from N photos.

Follows the Content-Aware Network of Zhao et al.: patch classes -> area proportions -> a physics head
that weighs areas by learnt material densities (see :mod:`scrapvision.models.canet`). Training needs the
binary copper mask of every photo and each sample's copper content. ``data.root = ""`` trains on the
physics-grounded synthetic granules of :mod:`scrapvision.data.synthetic.copper_granules`.

Batches are dicts: ``images`` [B, N, 3, H, W] float in [0, 1], ``area`` [B, N] (copper share of each
photo's mask), ``content`` [B] and ``assayed`` [B]. ``model.kind = "direct"`` trains the paper's
direct-regression baseline with the same data and metrics.

Mask-only training samples (masks, no content label: a training folder without ``copper_content``, or the
synthetic bags beyond ``data.assayed``) feed the area and per-patch terms only. Every training batch then
holds assayed samples for half its places (:meth:`CanetTask.epoch_indices`); the direct baseline, which has
nothing to learn from them, drops them.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from ..backbones import backbone_channels, create_backbone
from ..backbones.factory import is_timm_vit
from ..catalog import TASK_SUMMARIES
from ..checkpoint import atomic_write
from ..data.copper_samples import (
    CopperSetDataset,
    FolderStore,
    SamplePhotosDataset,
    SampleStore,
    list_samples,
)
from ..data.images import IMAGE_SUFFIXES, subfolders
from ..data.inference import listed_paths
from ..data.sampling import balanced_order, share_per_batch
from ..data.synthetic.copper_granules import GeneratorSpec, render_split
from ..errors import ConfigError, DataError
from ..models.canet import CANet, DirectRegression, canet_loss
from ..registry import TASKS
from ..task import Task, model_device
from ..tta import apply_pass, check_square, tta_average, tta_passes, undo_pass
from .canet_parts.config import (
    CanetConfig,
    CanetModelConfig,
)
from .canet_parts.metrics import content_metrics


def build_canet_backbone(cfg: CanetModelConfig) -> nn.Module:
    """The registry backbone; ViTs are built for ``img_size`` (and ``patch_size``/``vit_depth``, so a
    smaller CPU variant of a named ViT can be trained from scratch)."""
    kwargs = {}
    if is_timm_vit(cfg.backbone):
        # only the last block feeds the neck; timm's default (the last 3) fails for ViTs shallower than 3
        kwargs["out_indices"] = (-1,)
        kwargs["img_size"] = cfg.img_size
        if cfg.patch_size:
            kwargs["patch_size"] = cfg.patch_size
        if cfg.vit_depth:
            kwargs["depth"] = cfg.vit_depth
    elif cfg.patch_size or cfg.vit_depth:
        raise ConfigError(f"model.patch_size / model.vit_depth only apply to ViT backbones, not {cfg.backbone!r}; "
                          "set them to 0")
    return create_backbone(cfg.backbone, weights=cfg.weights or None, **kwargs)


@TASKS.register("canet")
class CanetTask(Task):
    name = "canet"
    Config = CanetConfig
    monitor = ("content_mae_pp", "min")
    summary = TASK_SUMMARIES["canet"]
    supports_tta = True
    smoke_overrides = ("model.backbone=test_vit", "model.img_size=32", "model.patch_size=8", "model.vit_depth=2",
                       "model.hidden=16", "data.images_per_sample=2", "data.synthetic_train=8",
                       "data.synthetic_val=4", "data.synthetic_stirs=2", "data.synthetic_render_size=48",
                       "train.batch_size=4")

    def __init__(self, cfg: CanetConfig) -> None:
        super().__init__(cfg)
        # the data section's own checks live in CanetDataConfig.__post_init__; this one spans two sections
        if cfg.model.kind == "direct" and cfg.data.eval_images_per_sample not in (0, cfg.data.images_per_sample):
            raise ConfigError("model.kind=direct takes a fixed N: data.eval_images_per_sample must be 0 or "
                              "equal to data.images_per_sample")

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        model_cfg = self.cfg.model
        backbone = build_canet_backbone(model_cfg)
        channels = backbone_channels(backbone)[-1]
        if model_cfg.kind == "direct":
            return DirectRegression(backbone, channels, self.cfg.data.images_per_sample, model_cfg.decoder_width)
        return CANet(backbone, channels, model_cfg.num_classes, model_cfg.hidden, model_cfg.copper_density,
                     model_cfg.init_density_range)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The density weights learn ``optim.density_lr_scale`` times faster; their weight decay is divided
        by the same factor, so each step decays them by the same fraction as every other weight."""
        if not isinstance(model, CANet):
            return super().param_groups(model)
        optim, densities = self.cfg.optim, model.impurity_density_param
        rest = [p for p in model.parameters() if p is not densities]
        return [{"params": rest},
                {"params": [densities], "lr": optim.lr * optim.density_lr_scale,
                 "weight_decay": optim.weight_decay / optim.density_lr_scale}]

    @classmethod
    def upgrade_checkpoint(cls, payload: dict[str, Any]) -> dict[str, Any]:
        """Checkpoints from before the optimiser parameter groups kept ``model.density_step_scale`` s and the
        weights ``impurity_density_raw`` with densities ``softplus(s * raw)``: now ``optim.density_lr_scale``
        and ``impurity_density_param = s * raw`` (the same densities)."""
        model_cfg = dict(payload.get("config", {}).get("model", {}))
        if "density_step_scale" not in model_cfg:
            return payload
        scale = model_cfg.pop("density_step_scale")
        config = {**payload["config"], "model": model_cfg,
                  "optim": {**payload["config"].get("optim", {}), "density_lr_scale": scale}}
        upgraded = {**payload, "config": config}
        if "model" in payload:
            state = dict(payload["model"])
            if "impurity_density_raw" in state:
                state["impurity_density_param"] = scale * state.pop("impurity_density_raw")
            upgraded["model"] = state
        return upgraded

    def model_input(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        return (batch["images"],)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        size = self.cfg.model.img_size
        return torch.rand(batch_size, self.cfg.data.images_per_sample, 3, size, size)

    def export_dynamic_axes(self) -> dict[int, str]:
        """A sample may have any number of photos, whatever N training used; the direct baseline takes its N."""
        return {0: "batch"} if self.cfg.model.kind == "direct" else {0: "batch", 1: "photos"}

    # ------------------------------------------------------------------ data
    def _spec(self) -> GeneratorSpec:
        data_cfg = self.cfg.data
        return GeneratorSpec(image_size=data_cfg.synthetic_render_size, field_mm=data_cfg.synthetic_field_mm,
                             stirs=data_cfg.synthetic_stirs, impurity_types=data_cfg.synthetic_impurity_types,
                             content_range=data_cfg.synthetic_content_range)

    def _store(self, split: str) -> SampleStore:
        """A split's samples; only ``train`` may hold mask-only ones (content None)."""
        data_cfg = self.cfg.data
        if not data_cfg.root:
            count = data_cfg.synthetic_train if split == "train" else data_cfg.synthetic_val
            rendered = render_split(self._spec(), data_cfg.synthetic_seed, split, count, self.cfg.model.img_size)
            contents: list[float | None] = list(rendered.contents)
            if split == "train" and data_cfg.assayed:
                contents[data_cfg.assayed:] = [None] * (count - data_cfg.assayed)
            return SampleStore(list(rendered.images), list(rendered.masks), list(rendered.areas), contents)
        samples = list_samples(Path(data_cfg.root) / split, need_content=split != "train")
        return FolderStore(samples, self.cfg.model.img_size)

    def _train_store(self) -> SampleStore:
        """The train split, without its mask-only samples for the direct baseline; says how many of each
        (only when some are mask-only: the CLI's stderr stays for errors in the usual case)."""
        store = self._store("train")
        assayed = store.assayed()
        kept, mask_only = [i for i, a in enumerate(assayed) if a], assayed.count(False)
        if not kept:
            where = Path(self.cfg.data.root) / "train" if self.cfg.data.root else "the synthetic train split"
            raise DataError(f"{where}: no training sample has a copper_content (sample.json); at least one must")
        if not mask_only:
            return store
        print(f"canet: {len(kept)} training samples assayed, {mask_only} mask-only", file=sys.stderr)
        if self.cfg.model.kind == "direct":
            print(f"canet: model.kind=direct cannot learn from mask-only samples: dropped {mask_only}", file=sys.stderr)
            return store.subset(kept)
        if self.cfg.train.batch_size < 2:
            raise ConfigError("train.batch_size=1 leaves no place for mask-only samples beside an assayed one; use >= 2")
        return store

    def _eval_n(self) -> int:
        return self.cfg.data.eval_images_per_sample or self.cfg.data.images_per_sample

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        seed = self.cfg.train.seed
        train = CopperSetDataset(self._train_store(), self.cfg.data.images_per_sample, train=True, seed=seed)
        return train, CopperSetDataset(self._store("val"), self._eval_n(), train=False)

    def build_eval_dataset(self) -> Dataset:
        """The test split (synthetic: held-out bags; on disk: ``<root>/test`` when present, else val), with
        every photo of each sample unless ``data.eval_images_per_sample`` names N (the direct baseline: its N)."""
        root = self.cfg.data.root
        split = "test" if not root or (Path(root) / "test").is_dir() else "val"
        n = self.cfg.data.images_per_sample if self.cfg.model.kind == "direct" else self.cfg.data.eval_images_per_sample
        return CopperSetDataset(self._store(split), n, train=False)

    # ------------------------------------------------------------------ training
    def epoch_indices(self, dataset: Dataset, epoch: int, generator: torch.Generator) -> Sequence[int]:
        """With mask-only samples: every assayed sample once plus as many mask-only draws (cycling through
        them from epoch to epoch), laid out so each batch is half assayed. An epoch thus counts content
        labels, as training on the assayed samples alone does, and no step lacks the content term."""
        assayed = dataset.assayed() if isinstance(dataset, CopperSetDataset) else []
        if all(assayed):
            return super().epoch_indices(dataset, epoch, generator)
        order = balanced_order(assayed, epoch, self.cfg.train.seed, generator, anchor=1)
        return share_per_batch(order, assayed, self.cfg.train.batch_size)

    def compute_loss(self, model: nn.Module, batch: dict, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = model(batch["images"])
        loss = self.cfg.loss
        return canet_loss(outputs, batch["area"], batch["content"], loss.lambda_a, loss.lambda_m,
                          batch["mask"], loss.lambda_p, batch.get("assayed"), loss.lambda_i)

    def outputs(self, model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's outputs for ``images`` [B, N, 3, H, W] under ``self.tta``. CANet sees every photo once
        per pass (flipped; ``d4``: also rotated), all in one forward pass as N x passes photos of the sample:
        its neck then averages the class proportions over the passes (probability space) before the density
        head weighs them, as it does with more photos. Per-photo areas and patch maps are averaged over the
        passes, each map turned back first. The direct baseline takes exactly N photos, so its contents are
        averaged. Works on every inference engine: the exported graph takes any number of photos."""
        images = images.to(model_device(model))
        if self.tta == "none":
            return model(images)
        if self.cfg.model.kind == "direct":
            return {"content": tta_average(lambda x: model(x)["content"], images, self.tta)}
        passes, n = tta_passes(self.tta), images.shape[1]
        check_square(images, self.tta)
        out = model(torch.cat([apply_pass(images, step) for step in passes], dim=1))
        merged = {"content": out["content"], "sample_proportions": out["sample_proportions"]}
        for key in ("area", "image_proportions"):  # [B, P*N, ...] -> mean over the P passes
            merged[key] = out[key].unflatten(1, (len(passes), n)).mean(1)
        maps = out["patch_probs"].unflatten(1, (len(passes), n))  # [B, P, N, K, h, w]
        merged["patch_probs"] = torch.stack([undo_pass(maps[:, p], step) for p, step in enumerate(passes)]).mean(0)
        return merged

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        device = model_device(model)
        true_c, pred_c, true_a, pred_a, losses = [], [], [], [], []
        for group in (group for collated in loader for group in photo_count_groups(collated)):
            batch = {k: v.to(device) for k, v in group.items()}
            outputs = self.outputs(model, batch["images"])
            cfg = self.cfg.loss
            loss, _ = canet_loss(outputs, batch["area"], batch["content"], cfg.lambda_a, cfg.lambda_m,
                                 batch["mask"], cfg.lambda_p, lambda_i=cfg.lambda_i)
            losses.append(float(loss) * len(batch["content"]))
            true_c.append(batch["content"].cpu())
            pred_c.append(outputs["content"].float().cpu())
            true_a.extend(batch["area"].cpu().numpy())  # one row per sample: photo counts may differ
            if "area" in outputs:
                pred_a.extend(outputs["area"].float().cpu().numpy())
        return content_metrics(torch.cat(true_c).numpy(), torch.cat(pred_c).numpy(), true_a, pred_a or None,
                               sum(losses))

    def write_report(self, model: nn.Module, loader: DataLoader, out: Path) -> list[Path]:
        from .canet_parts.report import write_canet_report

        return write_canet_report(self, model, loader, out)

    # ------------------------------------------------------------------ predict
    predict_key = "sample"
    predict_columns = ("sample", "photos", "copper_content", "true_copper_content", "abs_error_pp", "photo_areas")

    @classmethod
    def add_predict_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--images-per-sample", type=int, default=0,
                            help="use the first N photos of each sample (0: all; the direct baseline needs its N)")

    def collate_fn(self):
        return _collate

    def predict_dataset(self, inputs: Path, args: argparse.Namespace) -> Dataset:
        """One item per sample folder: ``inputs`` is a sample (``images/`` or photos directly), a folder
        of samples, or a ``.txt`` / ``.csv`` list of sample folders (CSV column ``sample``, else the first).
        The direct baseline takes exactly its training N photos."""
        limit = getattr(args, "images_per_sample", 0) or 0
        if self.cfg.model.kind == "direct":
            limit = self.cfg.data.images_per_sample
        folders = _sample_folders(Path(inputs), getattr(args, "allow_outside_root", False))
        return SamplePhotosDataset(folders, self.cfg.model.img_size, limit, exact=self.cfg.model.kind == "direct")

    def predict_batch(self, model: nn.Module, batch: list[dict], out: Path, args: argparse.Namespace) -> list[dict]:
        """One CSV row per sample. Samples with the same number of photos share one forward pass (a folder of
        samples usually has one N); nothing is printed per sample, the CSVs hold the results."""
        device, rows = model_device(model), {}
        by_count: dict[int, list[int]] = {}
        for i, item in enumerate(batch):
            by_count.setdefault(len(item["photos"]), []).append(i)
        for members in by_count.values():
            outputs = self.outputs(model, torch.stack([batch[i]["images"] for i in members]).to(device))
            for j, i in enumerate(members):
                item, names = batch[i], batch[i]["photos"]
                content = float(outputs["content"][j])
                areas = outputs["area"][j].tolist() if "area" in outputs else [float("nan")] * len(names)
                truth = item["true_copper_content"]
                rows[i] = {"sample": item["sample"], "photos": len(names), "copper_content": round(content, 6),
                           "true_copper_content": "" if truth is None else truth,
                           "abs_error_pp": "" if truth is None else round(100 * abs(content - truth), 4),
                           "photo_areas": ";".join(f"{n}={a:.6f}" for n, a in zip(names, areas))}
        return [rows[i] for i in range(len(batch))]

    def finish_predictions(self, predictions: Path, out: Path, args: argparse.Namespace) -> Path:
        """``canet_samples.csv`` (one row per sample) and ``canet_images.csv`` (one row per photo)."""
        with open(predictions, newline="", encoding="utf-8") as handle:
            samples = list(csv.DictReader(handle))
        images = []
        for row in samples:
            for pair in filter(None, row.pop("photo_areas").split(";")):
                name, area = pair.rsplit("=", 1)
                images.append({"sample": row["sample"], "image": name, "copper_area_proportion": area})
        _write_csv(out / "canet_images.csv", images, ("sample", "image", "copper_area_proportion"))
        return _write_csv(out / "canet_samples.csv", samples, self.predict_columns[:-1])


def _collate(items: list[dict]) -> Any:
    """Training batches stack as usual; prediction items stay a list, since samples differ in photo count.
    Evaluation samples with every photo may differ too: then the batch is a list of stacked sub-batches, one per
    photo count (:func:`photo_count_groups` iterates either form)."""
    if "sample" in items[0]:
        return items
    counts: dict[int, list[dict]] = {}
    for item in items:
        counts.setdefault(len(item["images"]), []).append(item)
    return default_collate(items) if len(counts) == 1 else [default_collate(group) for group in counts.values()]


def photo_count_groups(batch: Any) -> list[dict]:
    """The stacked sub-batches of a collated evaluation batch (one, unless samples differ in photo count)."""
    return batch if isinstance(batch, list) else [batch]


def _sample_folders(inputs: Path, allow_outside: bool = False) -> list[Path]:
    if inputs.is_file() and inputs.suffix.lower() in (".csv", ".txt"):
        folders = listed_paths(inputs, allow_outside, column="sample")
        missing = next((f for f in folders if not f.is_dir()), None)
        if missing is not None:
            raise DataError(f"{inputs}: lists {missing}, which is not a sample folder")
        return folders
    if not inputs.is_dir():
        raise DataError(f"--input {inputs}: expected a sample folder, a folder of sample folders or a "
                        "CSV/TXT list of sample folders")
    if (inputs / "images").is_dir() or any(p.suffix.lower() in IMAGE_SUFFIXES for p in inputs.iterdir()):
        return [inputs]
    folders = subfolders(inputs)
    if not folders:
        raise DataError(f"--input {inputs}: holds no photos and no sample folders")
    return folders


def _write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> Path:
    with atomic_write(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
