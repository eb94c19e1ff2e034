"""The clip_anomaly head: config, model, loss, training, reload, few-/zero-shot, predict, bad input."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scrapvision.checkpoint import load_checkpoint
from scrapvision.config import load_config, save_config
from scrapvision.data.class_masks import IGNORE_INDEX
from scrapvision.data.synthetic.scrap_anomaly import make_scene
from scrapvision.errors import ConfigError, DataError
from scrapvision.heads.clip_anomaly import ClipAnomalyConfig, ClipAnomalyTask
from scrapvision.heads.clip_anomaly_parts.data import to_tensor
from scrapvision.models.clip_anomaly import FocalDiceLoss, PatchAdapter, greedy_coreset
from scrapvision.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.image_size=[64, 64]", "data.n_train=48", "data.n_val=16", "train.epochs=3",
        "train.batch_size=8", "train.device=cpu", "train.log_every=1000", "optim.warmup_epochs=0"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_task(*overrides: str) -> ClipAnomalyTask:
    return ClipAnomalyTask(load_config(ClipAnomalyConfig, overrides=[*TINY, *overrides]))


def test_config_files_round_trip(tmp_path):
    cpu = load_config(ClipAnomalyConfig, REPO / "tasks" / "clip_anomaly.yaml")
    assert cpu == ClipAnomalyConfig()  # the CPU recipe file sets nothing: the defaults are the recipe
    paper = load_config(ClipAnomalyConfig, REPO / "tasks" / "clip_anomaly-paper.yaml")
    assert paper.model.clip_name == "ViT-L-14-336" and paper.model.image_size == (336, 336)
    save_config(paper, tmp_path / "c.yaml")
    assert load_config(ClipAnomalyConfig, tmp_path / "c.yaml") == paper
    with pytest.raises(ConfigError, match="model.finetune"):
        load_config(ClipAnomalyConfig, overrides=["model.finetune=some"])
    with pytest.raises(ConfigError, match="placeholder"):
        tiny_task("prompts.anomaly=no placeholder").prompts()


def test_prompts_cover_every_class_with_the_ensemble():
    task = tiny_task()
    prompts = task.prompts()
    assert len(prompts) == 6 and all(len(p) == len(task.cfg.prompts.templates) for p in prompts)
    assert "object which is made of steel" in prompts[0][0]
    assert "object which is not steel but copper wire" in prompts[1][0]


def test_forward_shapes_and_zero_shot_adapter_init():
    torch.manual_seed(0)
    task = tiny_task()
    model = task.build_model()
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 6, 64, 64)
    assert torch.allclose(model.text_embeddings.norm(dim=-1), torch.ones(6))
    # adapters start as CLIP's own ln_post + proj: zero-shot prompt matching without training
    torch.manual_seed(0)
    from scrapvision.backbones.clip import build_clip

    clip = build_clip("scrap-vit-tiny", image_size=(64, 64))
    tokens = torch.randn(3, 96)
    expected = clip.visual.ln_post(tokens) @ clip.visual.proj
    torch.testing.assert_close(model.adapters[0](tokens), expected)
    fresh = PatchAdapter(96, 64)
    assert not torch.allclose(fresh(tokens), expected)


def test_finetune_modes_choose_trainable_parameters():
    def trainable(mode: str) -> set[str]:
        model = tiny_task(f"model.finetune={mode}", "model.last_k=1").build_model()
        return {n for n, p in model.named_parameters() if p.requires_grad}

    full, last, frozen = trainable("full"), trainable("last_k"), trainable("frozen")
    assert not any(n.startswith("encoder.") for n in frozen)
    assert {n for n in last if n.startswith("encoder.")} and all(".resblocks.3." in n for n in last if n.startswith("encoder."))
    assert "encoder.visual.conv1.weight" in full and "logit_scale" in frozen and "adapters.0.1.weight" in frozen


def test_focal_dice_loss_behaviour():
    loss_fn = FocalDiceLoss(gamma=2.0)
    target = torch.randint(0, 3, (2, 8, 8))
    good = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 8
    assert loss_fn(good, target)[0] < loss_fn(-good, target)[0]
    ce = F.cross_entropy(good * 0.1, target)
    assert FocalDiceLoss(gamma=0.0).focal(good * 0.1, target) == pytest.approx(float(ce), rel=1e-5)
    assert loss_fn.focal(good * 0.1, target) < ce  # focusing down-weights easy pixels
    ignored = target.clone()
    ignored[:, :4] = IGNORE_INDEX
    noisy = good.clone()
    noisy[:, :, :4] = torch.randn_like(noisy[:, :, :4]) * 10  # garbage only where ignored
    assert loss_fn(noisy, ignored)[0] == pytest.approx(float(loss_fn(good, ignored)[0]), abs=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    task = tiny_task(f"train.out_dir={out}", "optim.lr=2e-3")
    result = Trainer(task, run_dir=out / "run").fit()
    return task, result


def test_training_lowers_loss_and_beats_chance(trained):
    task, result = trained
    rows = pd.read_csv(result.run_dir / "metrics.csv")
    assert rows["train_loss"].iloc[-1] < rows["train_loss"].iloc[0]
    assert result.metrics["val_pixel_auroc"] > 0.6  # chance is 0.5
    for key in ("val_miou", "val_iou_copper_wire", "val_pixel_ap", "val_aupro", "val_image_auroc"):
        assert key in result.metrics


def test_checkpoint_reload_gives_identical_outputs(trained):
    task, result = trained
    payload = load_checkpoint(result.best_path, task="clip_anomaly")
    torch.manual_seed(123)  # a different random init, text tower included: everything comes from the file
    fresh = ClipAnomalyTask(load_config(ClipAnomalyConfig, base=payload["config"]))
    model = fresh.build_model()
    model.load_state_dict(payload["model"])
    fresh.load_extras(payload["extras"])
    torch.manual_seed(0)
    original = task.build_model()
    original.load_state_dict(payload["model"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), original.eval()(x), rtol=0, atol=0)
    assert fresh.class_names() == task.class_names()


def test_predict_writes_masks_overlays_and_csv(trained, tmp_path):
    task, result = trained
    model = task.build_model()
    model.load_state_dict(load_checkpoint(result.best_path)["model"])
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    Image.fromarray(make_scene(5, 0, 80)[0]).save(inputs / "a.png")
    Image.fromarray(make_scene(5, 1, 80)[0][:60]).save(inputs / "sub" / "b.jpg")
    args = argparse.Namespace(overlays=1, batch_size=2, workers=0)
    csv = task.predict(model, inputs, tmp_path / "out", args)
    table = pd.read_csv(csv)
    assert list(table["file"]) == ["a.png", "sub/b.jpg"]
    assert np.asarray(Image.open(tmp_path / "out" / "masks" / "sub" / "b.png")).shape == (60, 80)
    assert Image.open(tmp_path / "out" / "overlays" / "a.png").size[0] > 200
    assert not (tmp_path / "out" / "overlays" / "sub").exists()  # --overlays 1: the first image only
    fractions = table[[c for c in table if c.startswith("frac_")]].sum(axis=1)
    assert np.allclose(fractions, 1.0, atol=1e-5)
    assert np.allclose(table["impurity_fraction"], 1.0 - table["frac_steel"], atol=1e-5)
    (inputs / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        task.predict(model, inputs, tmp_path / "out2", args)


def test_onnx_export_matches_torch(trained, tmp_path):
    from scrapvision.engines import OnnxEngine
    from scrapvision.export import export_onnx

    task, result = trained
    model = task.build_model().eval()
    model.load_state_dict(load_checkpoint(result.best_path)["model"])
    engine = OnnxEngine(export_onnx(task, model, tmp_path / "m.onnx"))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(engine(x), model(x), atol=1e-4, rtol=1e-4)


def test_few_shot_memory_flags_what_the_references_lack():
    torch.manual_seed(0)
    task = tiny_task("model.mode=few_shot", "model.finetune=frozen", "few_shot.k=2")
    model = task.build_model().eval()
    with pytest.raises(ConfigError, match="training-free"):
        task.compute_loss(model, {"image": torch.zeros(1, 3, 64, 64), "mask": torch.zeros(1, 64, 64).long()}, 0)
    task.prepare_memory(model)
    train = task.build_datasets()[0]
    first_normal = next(i for i in range(len(train)) if not train.raw(i)[1].any())  # one of the references
    reference = to_tensor(train.raw(first_normal)[0])[None]
    odd = reference.clone()
    odd[:, :, 16:48, 16:48] = torch.tensor([3.0, -1.5, 2.0])[:, None, None]  # a saturated blob
    uniform = torch.full((1, 6, 64, 64), 1 / 6)
    with torch.no_grad():
        mem_ref = model.memory.class_probs(model.encoder.tokens(reference), uniform, model.encoder.grid())
        mem_odd = model.memory.class_probs(model.encoder.tokens(odd), uniform, model.encoder.grid())
        text = F.interpolate(model.scale_logits(model.encoder.tokens(odd)), size=(64, 64), mode="bilinear").softmax(1)
        mixed = model(odd).exp()
    assert (1 - mem_ref[:, 0]).max() < 1e-3  # every patch of a reference has an exact match
    assert (1 - mem_odd[0, 0, 24:40, 24:40]).mean() > 0.05  # the blob has none
    torch.testing.assert_close(mem_odd.sum(1), torch.ones(1, 64, 64))
    mem_text = model.memory.class_probs(model.encoder.tokens(odd), text, model.encoder.grid())
    torch.testing.assert_close(mixed, 0.5 * text + 0.5 * mem_text, atol=1e-5, rtol=1e-4)


def test_greedy_coreset_covers_the_features_better_than_a_random_subset():
    """k-centre selection: the farthest point from the chosen ones is nearer than for a random pick of the same
    size, the chosen rows are distinct, and the selection is deterministic."""
    torch.manual_seed(0)
    clusters = torch.randn(8, 32) * 4
    x = (clusters[torch.randint(0, 8, (600,))] + 0.1 * torch.randn(600, 32))
    x[:5] = clusters[7] + 0.1 * torch.randn(5, 32)  # a rare cluster at the front
    x = torch.cat([x[5:], x[:5]])

    def cover(rows: torch.Tensor) -> float:
        return float(torch.cdist(x, x[rows]).amin(1).max())

    chosen = greedy_coreset(x, 16)
    assert len(set(chosen.tolist())) == 16 and torch.equal(chosen, greedy_coreset(x, 16))
    random_cover = min(cover(torch.randperm(600)[:16]) for _ in range(5))
    assert cover(chosen) < 0.5 * random_cover
    assert torch.equal(greedy_coreset(x, 900), torch.arange(600))


def test_capped_memory_bank_is_cut_to_the_cap_and_keeps_every_class():
    torch.manual_seed(0)
    task = tiny_task("model.mode=few_shot", "model.finetune=frozen", "few_shot.k=2", "few_shot.references=labelled",
                     "few_shot.max_patches=40")
    model = task.build_model().eval()
    full = tiny_task("model.mode=few_shot", "model.finetune=frozen", "few_shot.k=2", "few_shot.references=labelled",
                     "few_shot.max_patches=0")
    task.prepare_memory(model)
    capped_labels = model.memory.labels.clone()
    full.prepare_memory(model)
    assert len(model.memory.labels) > 40 >= len(capped_labels) - len(capped_labels.unique())
    assert set(capped_labels.tolist()) == set(model.memory.labels.tolist())  # no class crowded out
    with pytest.raises(ConfigError, match="few_shot.max_patches"):
        tiny_task("model.mode=few_shot", "few_shot.max_patches=-1")


def test_zero_shot_with_user_weights_runs_and_metrics_are_complete(tmp_path):
    from scrapvision.backbones.clip import build_clip

    weights = tmp_path / "user_clip.pt"
    torch.manual_seed(7)
    torch.save(build_clip("scrap-vit-tiny", image_size=64).state_dict(), weights)
    task = tiny_task("model.mode=zero_shot", f"model.weights={weights}", "data.n_val=4")
    torch.manual_seed(0)
    a = task.build_model()
    torch.manual_seed(1)
    b = task.build_model()  # same weights file -> same model whatever the seed
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)
    assert a.encoder.blocks == (3,)  # zero-shot: only the last block's tokens match CLIP's projection
    metrics = task.evaluate(a, torch.utils.data.DataLoader(task.build_eval_dataset(), batch_size=4))
    assert {"miou", "pixel_ap", "pixel_auroc", "aupro", "image_auroc", "loss"} <= set(metrics)
