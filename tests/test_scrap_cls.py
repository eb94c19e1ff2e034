"""scrap_cls: config, CLFSEF modules, losses, readers and the unreadable-image policy, splits, report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from scrapvision.config import from_dict, load_config, to_dict
from scrapvision.data.classification import (
    ClassificationDataset,
    find_records,
    load_images,
    read_class_csv,
    read_image_folder,
    split_indices,
)
from scrapvision.data.synthetic.scrap_grades import generate_images, write_scrap_grades
from scrapvision.errors import DataError, ScrapvisionError
from scrapvision.heads.scrap_cls import ScrapClsConfig, ScrapClsTask
from scrapvision.heads.scrap_cls_parts.report import classification_metrics, per_class_table, write_report
from scrapvision.models.clfsef import (
    CrossLayerFusion,
    ScrapClassifier,
    SemanticEnhance,
    clfsef_loss,
    distillation_loss,
    prediction_entropy,
)
from tests.conftest import REPO, real_dataset


# ---------------------------------------------------------------------------- config
def test_config_round_trip_and_recipes_load():
    cfg = ScrapClsConfig()
    assert from_dict(ScrapClsConfig, to_dict(cfg)) == cfg
    cpu = load_config(ScrapClsConfig, REPO / "tasks" / "scrap_cls.yaml")
    assert cpu == cfg, "tasks/scrap_cls.yaml is the built-in CPU recipe"
    paper = load_config(ScrapClsConfig, REPO / "tasks" / "scrap_cls-paper.yaml")
    assert paper.model.backbone == "efficientnet_b5" and paper.model.variant == "clfsef"


def test_config_rejects_bad_variant_and_policy():
    with pytest.raises(ScrapvisionError, match="model.variant"):
        load_config(ScrapClsConfig, overrides=["model.variant=clfsefx"])
    with pytest.raises(ScrapvisionError, match="data.unreadable"):
        load_config(ScrapClsConfig, overrides=["data.unreadable=ignore"])


# ---------------------------------------------------------------------------- modules
@pytest.mark.parametrize("variant", ["baseline", "clf", "sef", "clfsef", "probe"])
def test_classifier_shapes_per_variant(variant):
    model = ScrapClassifier(5, "test_efficientnet", variant, fuse_channels=16, sef_groups=4).eval()
    x = torch.randn(2, 3, 64, 64)
    logits, aux = model(x, return_aux=True)
    assert logits.shape == (2, 5)
    assert (aux is None) == (variant in ("baseline", "probe"))
    if aux is not None:
        assert aux.shape == (2, 5)
    assert torch.equal(model(x), logits)
    has_sef = any(isinstance(m, SemanticEnhance) for m in model.modules())
    has_clf = any(isinstance(m, CrossLayerFusion) for m in model.modules())
    assert (has_sef, has_clf) == (variant in ("sef", "clfsef"), variant in ("clf", "clfsef"))


def test_probe_learns_only_its_linear_layer_on_every_stage():
    """variant=probe: the backbone (weights and batch-norm statistics) stays as loaded through training steps,
    the classifier sees the pooled features of every stage, and only the linear layer and the standardiser's
    running statistics change."""
    torch.manual_seed(0)
    model = ScrapClassifier(3, "test_efficientnet", "probe", stages=(2, 3, 4))
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.weight.detach().clone()
    from scrapvision.backbones import backbone_channels
    assert model.head.in_features == sum(backbone_channels(model.backbone))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    assert not model.backbone.training and model.standardize.training
    for _ in range(3):
        loss, _ = clfsef_loss(*model(torch.rand(4, 3, 64, 64), return_aux=True), torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(backbone_before[k], after[k]) for k in backbone_before), "the probe moved its backbone"
    assert not torch.equal(head_before, model.head.weight)
    assert int(model.standardize.num_batches_tracked) == 3


def test_cross_layer_fusion_resizes_to_the_target_stage():
    fusion = CrossLayerFusion([4, 6, 8], [8, 16, 32], width=5, out_channels=7, target=-2)
    feats = [torch.randn(1, 4, 16, 16), torch.randn(1, 6, 8, 8), torch.randn(1, 8, 4, 4)]
    assert fusion(feats).shape == (1, 7, 8, 8)
    odd = [torch.randn(1, 4, 5, 7), torch.randn(1, 6, 3, 4), torch.randn(1, 8, 2, 2)]  # 'same' padding: ceil
    assert fusion(odd).shape == (1, 7, 3, 4)


def test_semantic_enhance_gates_by_similarity_to_the_group_mean():
    sef = SemanticEnhance(4, groups=2).eval()
    sef.regroup = torch.nn.Identity()  # look at the gate alone
    with torch.no_grad():
        sef.weight.fill_(5.0)
        sef.bias.zero_()
    x = torch.ones(1, 4, 3, 3)
    x[:, :, 0, 0] = -1.0  # one position points away from every group's mean
    y = sef(x)
    assert y.shape == x.shape
    gate = y / x
    assert gate[0, 0, 0, 0] < 0.05 and gate[0, 0, 1, 1] > 0.5
    with pytest.raises(ScrapvisionError, match="groups"):
        SemanticEnhance(6, groups=4)


def test_unknown_variant_is_one_line_error():
    with pytest.raises(ScrapvisionError, match="variant 'abc'"):
        ScrapClassifier(3, "test_efficientnet", "abc")


def test_backbone_weights_load_from_a_file_we_wrote(tmp_path):
    from safetensors.torch import save_file

    source = ScrapClassifier(3, "test_efficientnet", "baseline")
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()}, str(path))
    loaded = ScrapClassifier(3, "test_efficientnet", "clfsef", weights=str(path), fuse_channels=16, sef_groups=4)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[key], value), key
    fresh = ScrapClassifier(3, "test_efficientnet", "clfsef", fuse_channels=16, sef_groups=4)
    assert not all(torch.equal(fresh.backbone.state_dict()[k], v) for k, v in source.backbone.state_dict().items())


# ---------------------------------------------------------------------------- losses
def test_entropy_and_distillation_values():
    k = 6
    assert prediction_entropy(torch.zeros(3, k)).item() == pytest.approx(math.log(k), rel=1e-6)
    assert prediction_entropy(torch.tensor([[50.0, 0, 0]])).item() < 1e-6
    logits = torch.randn(4, k)
    assert distillation_loss(logits, logits, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(4, k)
    manual = F.kl_div(F.log_softmax(logits / 2, 1), F.softmax(other / 2, 1), reduction="batchmean") * 4
    assert distillation_loss(logits, other, 2.0).item() == pytest.approx(manual.item(), rel=1e-5)


def test_loss_terms_switch_on_and_off():
    torch.manual_seed(0)
    logits, aux, target = torch.randn(8, 4), torch.randn(8, 4), torch.randint(0, 4, (8,))
    base, logs = clfsef_loss(logits, None, target, aux_weight=1, kd_weight=0, entropy_weight=0)
    assert set(logs) == {"ce"} and base.item() == pytest.approx(F.cross_entropy(logits, target).item())
    full, logs = clfsef_loss(logits, aux, target, aux_weight=1, kd_weight=0.5, kd_temperature=4, entropy_weight=0.1)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(aux, target)
                + 0.5 * distillation_loss(aux, logits, 4) - 0.1 * prediction_entropy(logits))
    assert full.item() == pytest.approx(expected.item(), rel=1e-5)
    teacher = torch.randn(8, 4)
    _, logs = clfsef_loss(logits, aux, target, teacher=teacher, kd_weight=1.0)
    both = (distillation_loss(logits, teacher, 4) + distillation_loss(aux, teacher, 4)) / 2
    assert logs["kd"] == pytest.approx(both.item(), rel=1e-5)


def test_self_distillation_gradient_reaches_only_the_student():
    logits = torch.randn(4, 3, requires_grad=True)
    aux = torch.randn(4, 3, requires_grad=True)
    distillation_loss(aux, logits, 2.0).backward()
    assert logits.grad is None and aux.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- data
def _write_bad_files(folder: Path) -> tuple[Path, Path]:
    good = folder / "plate" / "plate_0000.png"
    truncated = folder / "plate" / "cut.jpg"
    import cv2

    ok, encoded = cv2.imencode(".jpg", np.full((40, 40, 3), 128, np.uint8))
    truncated.write_bytes(encoded.tobytes()[: len(encoded) // 2])
    empty = folder / "plate" / "empty.png"
    empty.write_bytes(b"")
    return good, truncated


def test_image_folder_and_csv_readers_agree(tmp_path):
    root = write_scrap_grades(tmp_path / "grades", per_class=2, size=32, classes=3)
    folder = read_image_folder(root)
    table = read_class_csv(root / "labels.csv")
    assert sorted((r.path, r.label) for r in folder) == sorted((r.path, r.label) for r in table)
    assert {r.label for r in folder} == {"heavy_melting", "shredded", "turnings"} and len(folder) == 6
    assert find_records(root, "auto") == table and find_records(root, "folder") == folder


def test_csv_reader_errors_name_the_row(tmp_path):
    root = write_scrap_grades(tmp_path / "g", per_class=1, size=16, classes=2)
    (root / "bad.csv").write_text("image,label\nx.png,a\n")
    with pytest.raises(DataError, match="missing column.*class"):
        read_class_csv(root / "bad.csv")
    (root / "escape.csv").write_text("image,class\n../outside.png,a\n")
    with pytest.raises(DataError, match="row 2.*outside the dataset root"):
        read_class_csv(root / "escape.csv")
    (root / "missing.csv").write_text("image,class\nheavy_melting/nope.png,a\n")
    with pytest.raises(DataError, match="row 2.*not found"):
        read_class_csv(root / "missing.csv")


A = "heavy_melting/heavy_melting_0000.png"
B = "shredded/shredded_0001.png"
REPEATS = [
    ([f"{A},heavy_melting", f"{B},shredded", f"{A},heavy_melting"], "rows 2 and 4", "listed twice"),
    ([f"{A},heavy_melting", f"{B},shredded", f"./{A},shredded"], "rows 2 and 4", "two classes, 'heavy_melting' and 'shredded'"),
]


@pytest.mark.parametrize("rows, where, problem", REPEATS)
def test_csv_reader_refuses_repeated_images(tmp_path, rows, where, problem):
    root = write_scrap_grades(tmp_path / "g", per_class=1, size=16, classes=2)
    (root / "rep.csv").write_text("image,class\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        read_class_csv(root / "rep.csv")
    message = str(info.value)
    assert "rep.csv" in message and where in message and problem in message and A in message
    assert "\n" not in message


@pytest.mark.parametrize("label", ["", "nan", "NaN", "None", "NULL", " null "])
def test_csv_reader_refuses_empty_and_nan_like_classes(tmp_path, label):
    root = write_scrap_grades(tmp_path / "g", per_class=1, size=16, classes=2)
    (root / "na.csv").write_text(f"image,class\n{A},heavy_melting\n{B},{label}\n")
    with pytest.raises(DataError, match=r"na\.csv row 3: image .*shredded_0001\.png.* has no class") as info:
        read_class_csv(root / "na.csv")
    assert "\n" not in str(info.value)
    (root / "ok.csv").write_text(f"image,class\n{A},heavy_melting\n{B},nano\n")  # only whole-name matches
    assert [r.label for r in read_class_csv(root / "ok.csv")] == ["heavy_melting", "nano"]


def test_unreadable_policy_skip_reports_and_fail_names_the_file(tmp_path):
    root = write_scrap_grades(tmp_path / "g", per_class=2, size=24, classes=4)
    _write_bad_files(root)
    paths = [r.path for r in read_image_folder(root)]
    images, kept, skipped = load_images(paths, "skip", 20)
    assert len(images) == len(kept) == len(paths) - 2 and len(skipped) == 2
    assert any("cut.jpg" in s for s in skipped) and any("empty.png" in s for s in skipped)
    assert all(min(im.shape[:2]) == 20 for im in images)
    with pytest.raises(DataError) as info:
        load_images(paths, "fail", 20)
    message = str(info.value)
    assert "\n" not in message and ("cut.jpg" in message or "empty.png" in message)


def test_task_skips_unreadable_and_says_so(tmp_path, capsys):
    root = write_scrap_grades(tmp_path / "g", per_class=5, size=24, classes=4)
    _write_bad_files(root)
    (root / "labels.csv").unlink()  # ImageFolder layout, so the bad files are part of the data
    cfg = load_config(ScrapClsConfig, overrides=[f"data.root={root}", "data.image_size=16"])
    task = ScrapClsTask(cfg)
    train, val = task.build_datasets()
    assert len(train) + len(val) == 20 and len(task.skipped) == 2
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image(s)" in err and "cut.jpg" in err
    with pytest.raises(DataError, match="empty.png|cut.jpg"):
        ScrapClsTask(load_config(ScrapClsConfig, overrides=[f"data.root={root}", "data.unreadable=fail"])).build_datasets()


def test_eval_split_all_scores_a_folder_too_small_to_split(tmp_path):
    root = write_scrap_grades(tmp_path / "test", per_class=1, size=24, classes=3)
    task = ScrapClsTask(load_config(ScrapClsConfig, overrides=[f"data.root={root}", "data.eval_split=all"]))
    assert len(task.build_eval_dataset()) == 3
    with pytest.raises(DataError, match="only one image"):
        ScrapClsTask(load_config(ScrapClsConfig, overrides=[f"data.root={root}"])).build_eval_dataset()


def test_val_fraction_zero_trains_on_every_image_and_best_is_the_last_epoch(tmp_path):
    from scrapvision.checkpoint import load_checkpoint
    from scrapvision.trainer import Trainer

    assert split_indices(["a", "a", "b"], 0.0) == ([0, 1, 2], [])  # even a class too small to split
    root = write_scrap_grades(tmp_path / "g", per_class=4, size=24, classes=3)
    overrides = [*ScrapClsTask.smoke_overrides, f"data.root={root}", "data.val_fraction=0", "train.epochs=2"]
    task = ScrapClsTask(load_config(ScrapClsConfig, overrides=overrides))
    train, val = task.build_datasets()
    assert (len(train), len(val)) == (12, 0)
    result = Trainer(task, run_dir=tmp_path / "run").fit()
    best, last = load_checkpoint(result.best_path), load_checkpoint(result.last_path)
    assert best["epoch"] == last["epoch"] == 2  # no validation to choose by: best.pt follows the latest epoch
    assert all(torch.equal(best["model"][k], v) for k, v in last["model"].items())
    held_out = write_scrap_grades(tmp_path / "held_out", per_class=2, size=24, classes=3, seed=5)
    scored = ScrapClsTask(load_config(ScrapClsConfig, overrides=[*overrides[:-3], f"data.root={held_out}",
                                                                 "data.eval_split=all"]))
    assert len(scored.build_eval_dataset()) == 6


def test_stratified_split_and_kfold_partition():
    labels = ["a"] * 10 + ["b"] * 6 + ["c"] * 4
    train, val = split_indices(labels, 0.25, seed=3)
    assert not set(train) & set(val) and len(train) + len(val) == 20
    assert {labels[i] for i in val} == {"a", "b", "c"}
    assert split_indices(labels, 0.25, seed=3) == (train, val)
    folds = [split_indices(labels, folds=4, fold=k, seed=1)[1] for k in range(4)]
    assert sorted(i for f in folds for i in f) == list(range(20))
    with pytest.raises(DataError, match="only one image"):
        split_indices(["a", "a", "b"], 0.3)
    with pytest.raises(DataError, match="fold=4"):
        split_indices(labels, folds=4, fold=4)


def test_augmentation_is_seeded_per_sample_and_epoch():
    images, labels, _ = generate_images(2, 40, seed=0, classes=2)
    ds = ClassificationDataset(images, labels, 32, "strong", seed=5)
    first = ds[1]["image"]
    assert first.shape == (3, 32, 32)
    assert torch.equal(ds[0]["image"] * 0 + ds[1]["image"], first)
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["image"], first)
    ds.set_epoch(0)
    assert torch.equal(ds[1]["image"], first)


def test_augmentations_draw_independently_per_transform():
    """Two p = 0.5 transforms must co-occur about a quarter of the time, not half (one shared seed)."""
    import albumentations as A

    corner = np.zeros((8, 8, 3), np.uint8)
    corner[0, 0] = 255
    n = 400
    ds = ClassificationDataset([corner] * n, [0] * n, 8, "none", seed=3)
    ds.transform = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    where = [tuple(int(v) for v in np.argwhere(ds[i]["image"][0].numpy() == 255)[0]) for i in range(n)]
    share = {pos: where.count(pos) / n for pos in [(0, 0), (0, 7), (7, 0), (7, 7)]}
    assert sum(share.values()) == 1.0
    for pos, fraction in share.items():  # binomial sd at n = 400 is 0.022
        assert 0.17 < fraction < 0.33, (pos, share)
    again = ClassificationDataset([corner] * n, [0] * n, 8, "none", seed=3)
    again.transform = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    assert all(torch.equal(again[i]["image"], ds[i]["image"]) for i in range(0, n, 37))


def test_strong_pipeline_seeds_every_transform_differently():
    from scrapvision.data.classification import build_transform
    from scrapvision.data.images import sample_rng, seed_transforms

    pipeline = build_transform(32, "strong")
    seed_transforms(pipeline, sample_rng(0, 0, 7))
    seeds = [t.seed for t in pipeline.transforms]
    assert len(seeds) == 8 and len(set(seeds)) == len(seeds)


def test_synthetic_generator_is_deterministic_and_classes_differ():
    a, la, names = generate_images(3, 48, seed=2, classes=4)
    b, _, _ = generate_images(3, 48, seed=2, classes=4)
    c, _, _ = generate_images(3, 48, seed=3, classes=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert la == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3] and len(names) == 4
    with pytest.raises(DataError, match="2..8"):
        generate_images(1, 16, classes=9)


def test_balanced_sampling_evens_out_classes():
    images, _, _ = generate_images(1, 16, seed=0, classes=2)
    labels = [0] * 90 + [1] * 10
    ds = ClassificationDataset([images[0]] * 100, labels, 16)
    task = ScrapClsTask(load_config(ScrapClsConfig, overrides=["data.sampling=balanced"]))
    order = task.epoch_indices(ds, 0, torch.Generator().manual_seed(0))
    share = np.mean([labels[i] for i in order])
    assert len(order) == 100 and 0.35 < share < 0.65


# ---------------------------------------------------------------------------- report
def test_metrics_and_per_class_report(tmp_path):
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(4 / 6)
    f1s = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * 1 * 0.5 / 1.5]
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))
    rows = write_report(tmp_path, y_true, y_pred, ["a", "b", "c", "d"])
    assert rows[1]["precision"] == pytest.approx(2 / 3) and rows[1]["recall"] == 1.0
    assert rows[3]["support"] == 0 and rows[3]["recall"] == 0.0
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "per_class.csv").read_text().splitlines()[0] == "class,precision,recall,f1,support"
    assert per_class_table(y_true, y_pred, ["a", "b", "c"])[2]["recall"] == 0.5


# ---------------------------------------------------------------------------- real data (skips when absent)
TRUNCATED = ("Auto_Factory_Bales/AFBS-17.jpg", "Rolling_Scrap/7 (3).jpg")


@pytest.mark.realdata
def test_real_scrap_grades_reader_and_truncated_files():
    root = real_dataset("scrap_grades")
    records = find_records(root)
    assert len(records) == 333 and len({r.label for r in records}) == 24
    bad = [r.path for r in records if any(str(r.path).endswith(t) for t in TRUNCATED)]
    assert len(bad) == 2
    good = [r.path for r in records[:3]]
    images, kept, skipped = load_images(good + bad, "skip", 64)
    assert kept == [0, 1, 2] and len(skipped) == 2
    assert all("truncated" in s or "cannot be decoded" in s for s in skipped)
    with pytest.raises(DataError, match="AFBS-17.jpg|7 \\(3\\).jpg"):
        load_images(bad, "fail", 64)
    train, val = split_indices([r.label for r in records], 0.2, seed=0)
    assert len(val) == 67 and len({records[i].label for i in train}) == 24


# ---------------------------------------------------------------------------- test-time options
def test_eval_image_size_scores_larger_inputs_and_training_keeps_its_size(tmp_path):
    """eval.image_size changes what eval / predict / export see, never what training sees."""
    root = write_scrap_grades(tmp_path / "g", per_class=4, size=48, classes=3)
    base = [f"data.root={root}", "data.image_size=16", "data.augment=none"]
    plain = ScrapClsTask(load_config(ScrapClsConfig, overrides=base))
    larger = ScrapClsTask(load_config(ScrapClsConfig, overrides=[*base, "eval.image_size=24"]))
    (train_a, val_a), (train_b, val_b) = plain.build_datasets(), larger.build_datasets()
    assert val_a[0]["image"].shape == (3, 16, 16) and val_b[0]["image"].shape == (3, 24, 24)
    assert larger.build_eval_dataset()[0]["image"].shape == (3, 24, 24)
    assert tuple(larger.example_input(2).shape) == (2, 3, 24, 24)
    # training images: the same size, and (shrunk from the larger decoded copy) nearly the same pixels
    assert train_a[0]["image"].shape == train_b[0]["image"].shape == (3, 16, 16)
    assert float((train_a[0]["image"] - train_b[0]["image"]).abs().mean()) < 0.1
    with pytest.raises(ScrapvisionError, match="eval.image_size"):
        ScrapClsTask(load_config(ScrapClsConfig, overrides=[*base, "eval.image_size=-1"]))


def test_hflip_tta_makes_the_classifier_mirror_invariant():
    """With eval.tta=hflip an image and its mirror get the same probabilities; the untrained model alone does not."""
    task = ScrapClsTask(load_config(ScrapClsConfig, overrides=[*ScrapClsTask.smoke_overrides, "eval.tta=hflip"]))
    assert task.tta == "hflip"
    torch.manual_seed(0)
    model = task.build_model().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        task.tta = "none"
        plain, mirrored = task.probabilities(model, x), task.probabilities(model, x.flip(-1))
        assert not torch.allclose(plain, mirrored, atol=1e-4)
        assert torch.allclose(plain.sum(1), torch.ones(3))
        task.tta = "hflip"
        both = task.probabilities(model, x)
        torch.testing.assert_close(both, task.probabilities(model, x.flip(-1)))
        torch.testing.assert_close(both, (plain + mirrored) / 2)


def test_d4_tta_makes_the_classifier_rotation_invariant():
    """eval.tta=d4 (the eight rotations and mirror images) is a config value scrap_cls takes; with it a photo
    rotated by 90 degrees gets the photo's probabilities, which the untrained model alone does not give."""
    task = ScrapClsTask(load_config(ScrapClsConfig, overrides=[*ScrapClsTask.smoke_overrides, "eval.tta=d4"]))
    assert task.tta == "d4"
    torch.manual_seed(0)
    model = task.build_model().eval()
    x = torch.randn(3, 3, 32, 32)
    rotated = x.rot90(1, dims=(-2, -1))
    with torch.no_grad():
        task.tta = "none"
        assert not torch.allclose(task.probabilities(model, x), task.probabilities(model, rotated), atol=1e-4)
        task.tta = "d4"
        torch.testing.assert_close(task.probabilities(model, rotated), task.probabilities(model, x))
