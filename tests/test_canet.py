"""The canet head: config, CANet / direct-regression modules, physics head, loss, training, reload, predict."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from scrapvision.api import load_trained
from scrapvision.backbones import create_backbone
from scrapvision.checkpoint import model_payload, save_checkpoint
from scrapvision.config import from_dict, load_config, to_dict
from scrapvision.data.synthetic.copper_granules import GeneratorSpec, write_dataset
from scrapvision.errors import ConfigError, DataError
from scrapvision.heads.canet import CanetConfig, CanetTask, build_canet_backbone
from scrapvision.models.canet import CANet, DirectRegression, canet_loss, impurity_class_spread
from scrapvision.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model.backbone=test_vit", "model.img_size=32", "model.patch_size=8", "model.vit_depth=2", "model.hidden=32",
    "data.images_per_sample=2", "data.synthetic_train=24", "data.synthetic_val=8", "data.synthetic_stirs=2",
    "data.synthetic_render_size=48", "train.batch_size=4", "train.log_every=1000", "train.device=cpu",
]


def tiny_task(tmp_path: Path, *extra: str) -> CanetTask:
    return CanetTask(load_config(CanetConfig, None, [*TINY, f"train.out_dir={tmp_path}", *extra]))


def tiny_canet(num_classes: int = 4) -> CANet:
    backbone = create_backbone("test_vit", out_indices=(-1,), img_size=32, patch_size=8, depth=2)
    return CANet(backbone, 64, num_classes=num_classes, hidden=16)


def test_config_round_trip_and_recipes():
    cfg = CanetConfig()
    assert from_dict(CanetConfig, to_dict(cfg)) == cfg
    assert load_config(CanetConfig, REPO / "tasks" / "canet.yaml") == cfg  # the CPU recipe = the defaults
    paper = load_config(CanetConfig, REPO / "tasks" / "canet-paper.yaml")
    assert paper.model.backbone == "vit_small_patch8_224" and paper.model.img_size == 224


def test_canet_shapes_proportions_and_photo_order_invariance():
    torch.manual_seed(0)
    model = tiny_canet().eval()
    images = torch.rand(3, 5, 3, 32, 32)
    out = model(images)
    assert out["content"].shape == (3,) and out["area"].shape == (3, 5)
    assert out["image_proportions"].shape == (3, 5, 4) and out["patch_probs"].shape == (3, 5, 4, 4, 4)
    torch.testing.assert_close(out["sample_proportions"].sum(-1), torch.ones(3))
    assert ((out["content"] > 0) & (out["content"] < 1)).all()
    shuffled = model(images[:, torch.tensor([4, 2, 0, 1, 3])])
    torch.testing.assert_close(shuffled["content"], out["content"])
    assert model(images[:, :2])["content"].shape == (3,)  # any N at inference


class _PooledPixels(torch.nn.Module):
    """A backbone whose patch features are the mean pixels of each 8x8 patch: flipping the photo flips the map."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.nn.functional.avg_pool2d(x, 8)]


@pytest.mark.parametrize("mode", ["hflip", "hvflip", "d4"])
def test_flip_tta_averages_class_proportions_over_the_flips(tmp_path, mode):
    """Under --tta the content comes from the class proportions averaged over the flipped passes (not from
    averaged contents), and the patch maps come back in the photo's own orientation."""
    torch.manual_seed(0)
    task = tiny_task(tmp_path)
    task.tta = mode
    images = torch.rand(2, 3, 3, 32, 32)
    model = tiny_canet().eval()
    with torch.no_grad():
        out = task.outputs(model, images)
        views = {"hflip": [images, images.flip(-1)],
                 "hvflip": [images, images.flip(-1), images.flip(-2), images.flip(-2, -1)]}
        views["d4"] = [*views["hvflip"], *(v.transpose(-2, -1) for v in views["hvflip"])]
        passes = [model(view) for view in views[mode]]
    mean_props = torch.stack([p["sample_proportions"] for p in passes]).mean(0)
    torch.testing.assert_close(out["content"], model.content_from_proportions(mean_props))
    torch.testing.assert_close(out["area"], torch.stack([p["area"] for p in passes]).mean(0))
    assert not torch.allclose(out["content"], passes[0]["content"])  # the ViT is not flip-invariant
    # a model whose patch map follows the photo's flips: the averaged maps equal the plain ones only if each
    # pass's map is flipped back
    equivariant = CANet(_PooledPixels(), 3, num_classes=4, hidden=8).eval()
    with torch.no_grad():
        plain, flipped = equivariant(images), task.outputs(equivariant, images)
    torch.testing.assert_close(flipped["patch_probs"], plain["patch_probs"])
    torch.testing.assert_close(flipped["content"], plain["content"])


def test_flip_tta_of_the_direct_baseline_averages_its_contents(tmp_path):
    task = tiny_task(tmp_path, "model.kind=direct")
    task.tta = "hflip"
    torch.manual_seed(0)
    model = task.build_model().eval()
    images = torch.rand(2, 2, 3, 32, 32)
    with torch.no_grad():
        expected = (model(images)["content"] + model(images.flip(-1))["content"]) / 2
        torch.testing.assert_close(task.outputs(model, images)["content"], expected)


def test_physics_head_follows_the_formula_and_stays_valid():
    model = tiny_canet(num_classes=3)
    with torch.no_grad():  # impurity densities 2.7 and 1.2 g/cm^3
        raw = torch.log(torch.expm1(torch.tensor([[2.7, 1.2]]) - model.min_density))
        model.impurity_density_param.copy_(raw)
    torch.testing.assert_close(model.impurity_densities(), torch.tensor([[2.7, 1.2]]))
    p = torch.tensor([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [0.0, 0.6, 0.4]])
    expected = 8.96 * 0.5 / (8.96 * 0.5 + 2.7 * 0.3 + 1.2 * 0.2)
    torch.testing.assert_close(model.content_from_proportions(p), torch.tensor([expected, 1.0, 0.0]))
    with torch.no_grad():  # densities pushed to the floor: still finite, positive
        model.impurity_density_param.fill_(-200.0)
    content = model.content_from_proportions(torch.tensor([[0.0, 1.0, 0.0], [0.2, 0.4, 0.4]]))
    assert torch.isfinite(content).all() and (model.impurity_densities() > 0).all()
    with pytest.raises(ValueError):
        CANet(create_backbone("test_vit", out_indices=(-1,), img_size=32, patch_size=8, depth=2), 64, num_classes=1)


def test_default_densities_start_on_both_sides_of_copper():
    """A class must be able to stand for impurities that weigh more per unit area than copper (solder beads,
    thick brass): with the old 0.8-8 range the heaviest class sat below copper and the model underweighted them."""
    model = CanetTask(CanetConfig()).build_model()
    densities = model.impurity_densities().detach().view(-1)
    copper = float(model.copper_density)
    assert float(densities.max()) > copper > float(densities.min())
    ratios = densities[1:] / densities[:-1]  # log-spaced: a constant ratio between neighbouring classes
    torch.testing.assert_close(ratios, torch.full_like(ratios, float(ratios.mean())), rtol=1e-3, atol=0)


def test_density_weights_get_their_own_learning_rate_and_decay(tmp_path):
    task = tiny_task(tmp_path, "optim.density_lr_scale=5")
    model = task.build_model()
    rest, densities = task.param_groups(model)
    assert densities["params"] == [model.impurity_density_param]
    assert densities["lr"] == pytest.approx(5 * task.cfg.optim.lr)
    assert densities["weight_decay"] == pytest.approx(task.cfg.optim.weight_decay / 5)
    assert len(rest["params"]) == len(list(model.parameters())) - 1 and "lr" not in rest


def test_checkpoint_of_the_scaled_density_parameterisation_loads_converted(tmp_path):
    """Before the optimiser parameter groups, the densities were softplus(s * raw) with s in the model
    config; such a checkpoint must load with the same densities and s as the density lr multiplier."""
    task = tiny_task(tmp_path)
    model = task.build_model()
    with torch.no_grad():
        model.impurity_density_param.copy_(torch.linspace(-2.0, 3.0, model.impurity_density_param.numel()))
    payload = model_payload(task, model)
    payload["config"]["model"]["density_step_scale"] = 7.0
    del payload["config"]["optim"]["density_lr_scale"]
    payload["model"]["impurity_density_raw"] = payload["model"].pop("impurity_density_param") / 7.0
    save_checkpoint(payload, tmp_path / "old.pt")
    loaded_task, loaded = load_trained("canet", tmp_path / "old.pt")
    torch.testing.assert_close(loaded.impurity_densities(), model.impurity_densities())
    assert loaded_task.cfg.optim.density_lr_scale == 7.0


def test_direct_regression_shapes_and_fixed_n():
    backbone = create_backbone("test_vit", out_indices=(-1,), img_size=32, patch_size=8, depth=2)
    model = DirectRegression(backbone, 64, num_images=3, width=16).eval()
    out = model(torch.rand(2, 3, 3, 32, 32))
    assert out["content"].shape == (2,) and "area" not in out
    with pytest.raises(ValueError, match="exactly 3 photos"):
        model(torch.rand(2, 4, 3, 32, 32))


def test_loss_terms_and_weights():
    content, area = torch.tensor([0.9, 0.7]), torch.tensor([[0.5, 0.6], [0.3, 0.2]])
    perfect = {"content": content.clone(), "area": area.clone()}
    assert float(canet_loss(perfect, area, content)[0]) == 0.0
    off = {"content": content + 0.1, "area": area + 0.2}
    loss, logs = canet_loss(off, area, content, lambda_a=0.2, lambda_m=0.8)
    assert float(loss) == pytest.approx(0.2 * 0.04 + 0.8 * 0.01)
    assert float(canet_loss(off, area, content, lambda_a=0.0)[0]) == pytest.approx(0.8 * 0.01)
    direct_loss, direct_logs = canet_loss({"content": content + 0.1}, area, content)
    assert float(direct_loss) == pytest.approx(0.8 * 0.01) and "area_mse" not in direct_logs


def test_impurity_class_spread_rewards_confident_and_varied_classes():
    """-log I when every impurity patch picks one class and the classes are used evenly; 0 when every patch
    hesitates evenly or all pick the same class; copper patches do not count."""
    impurities = 4
    picked = torch.zeros(1, 1, 1 + impurities, 2, impurities)  # [B, N, K, h, w]: column j picks class 1 + j
    for j in range(impurities):
        picked[0, 0, 1 + j, :, j] = 1.0
    assert float(impurity_class_spread(picked)) == pytest.approx(-math.log(impurities))
    hesitant = torch.zeros_like(picked)
    hesitant[:, :, 1:] = 1.0 / impurities
    assert float(impurity_class_spread(hesitant)) == pytest.approx(0.0, abs=1e-6)
    same = torch.zeros_like(picked)
    same[:, :, 1] = 1.0
    assert float(impurity_class_spread(same)) == pytest.approx(0.0, abs=1e-6)
    with_copper = torch.cat([picked, torch.zeros_like(picked)], dim=-1)
    with_copper[:, :, 0, :, impurities:] = 1.0  # pure copper patches: weight 0
    assert float(impurity_class_spread(with_copper)) == pytest.approx(-math.log(impurities))
    logits = torch.zeros(1, 1, 1 + impurities, 2, 3, requires_grad=True)
    outputs = {"content": torch.tensor([0.8]), "patch_probs": logits.softmax(2)}
    loss, logs = canet_loss(outputs, torch.zeros(1, 1), torch.tensor([0.8]), lambda_i=0.5)
    assert loss.item() == pytest.approx(0.5 * logs["class_spread"])
    assert canet_loss(outputs, torch.zeros(1, 1), torch.tensor([0.8]))[1].get("class_spread") is None


def test_vit_is_built_for_the_recipe_resolution():
    cfg = CanetConfig().model
    backbone = build_canet_backbone(cfg)
    feats = backbone(torch.rand(1, 3, cfg.img_size, cfg.img_size))
    assert feats[-1].shape[-2:] == (cfg.img_size // cfg.patch_size,) * 2
    assert len(backbone.model.blocks) == cfg.vit_depth
    with pytest.raises(ConfigError, match="only apply to ViT"):
        build_canet_backbone(dataclasses.replace(cfg, backbone="tiny_cnn"))


def test_backbone_weights_from_a_local_file(tmp_path):
    from safetensors.torch import save_file

    source = create_backbone("test_vit", out_indices=(-1,), img_size=32, patch_size=8, depth=2)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    task = tiny_task(tmp_path, f"model.weights={path}")
    model = task.build_model()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.features.backbone.state_dict()[key], value)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short fit shared by the tests below (the expensive part of this file)."""
    out = tmp_path_factory.mktemp("canet_runs")
    torch.manual_seed(0)
    task = tiny_task(out, "train.epochs=6", "optim.lr=3e-3", "optim.warmup_epochs=0")
    untrained = task.evaluate(task.build_model().eval(), torch.utils.data.DataLoader(task.build_datasets()[1], 4))
    result = Trainer(task).fit()
    return task, result, untrained


def test_fit_lowers_the_loss_and_the_error(trained):
    task, result, untrained = trained
    rows = [line for line in (result.run_dir / "metrics.csv").read_text().splitlines()[1:]]
    header = (result.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    losses = [float(r.split(",")[header.index("train_loss")]) for r in rows]
    assert losses[-1] < 0.5 * losses[0]
    assert result.metrics["val_content_mae_pp"] < 0.5 * untrained["content_mae_pp"]
    assert result.metrics["val_area_mae_pp"] < untrained["area_mae_pp"]


def test_checkpoint_reload_gives_identical_outputs(trained):
    task, result, _ = trained
    _, model = load_trained("canet", result.best_path)
    payload = torch.load(result.best_path, weights_only=True)
    original = task.build_model()
    original.load_state_dict(payload["model"])
    original.eval()
    x = torch.rand(2, 3, 3, 32, 32)
    torch.testing.assert_close(model(x)["content"], original(x)["content"], rtol=0, atol=0)


def test_predict_writes_csvs_quietly(trained, tmp_path, capsys):
    task, result, _ = trained
    _, model = load_trained("canet", result.best_path)
    write_dataset(tmp_path / "data", GeneratorSpec(image_size=48, stirs=3), {"test": 2})
    out = tmp_path / "pred"
    out.mkdir()
    main = task.predict(model, tmp_path / "data" / "test", out, argparse.Namespace(images_per_sample=0))
    lines = main.read_text().splitlines()
    assert lines[0] == "sample,photos,copper_content,true_copper_content,abs_error_pp" and len(lines) == 3
    images_csv = (out / "canet_images.csv").read_text().splitlines()
    assert images_csv[0] == "sample,image,copper_area_proportion" and len(images_csv) == 1 + 2 * 3
    assert images_csv[1].startswith("sample_00000,stir_00.png,")
    assert "copper content" not in capsys.readouterr().out  # the CSVs hold the results, not the console
    # the same --out resumes: finished samples are neither redone nor lost
    again = task.predict(model, tmp_path / "data" / "test", out, argparse.Namespace(images_per_sample=0))
    assert again.read_text() == main.read_text()
    single = task.predict(model, tmp_path / "data" / "test" / "sample_00001", tmp_path / "one",
                          argparse.Namespace(images_per_sample=2))
    assert single.read_text().splitlines()[1].startswith("sample_00001,2,")
    # the printed content is the model's: recompute it from the photos directly
    row = single.read_text().splitlines()[1].split(",")
    photos = sorted((tmp_path / "data" / "test" / "sample_00001" / "images").iterdir())[:2]
    from scrapvision.data.copper_samples import load_images

    pixels, _ = load_images(tuple(photos), task.cfg.model.img_size)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    with torch.no_grad():
        assert float(row[2]) == pytest.approx(float(model(x)["content"][0]), abs=1e-5)


def test_predict_batch_groups_samples_by_photo_count_and_matches_one_at_a_time(trained, tmp_path):
    task, result, _ = trained
    _, model = load_trained("canet", result.best_path)
    write_dataset(tmp_path / "data", GeneratorSpec(image_size=48, stirs=3), {"test": 3})
    three = task.predict_dataset(tmp_path / "data" / "test", argparse.Namespace(images_per_sample=0))
    two = task.predict_dataset(tmp_path / "data" / "test", argparse.Namespace(images_per_sample=2))
    batch = [three[0], two[1], three[2]]  # N = 3, 2, 3: two forward passes, rows in the batch's order
    with torch.no_grad():  # as the predict loop runs it
        rows = task.predict_batch(model, batch, tmp_path, argparse.Namespace())
    assert [r["sample"] for r in rows] == [b["sample"] for b in batch] and [r["photos"] for r in rows] == [3, 2, 3]
    with torch.no_grad():
        for row, item in zip(rows, batch):
            alone = float(model(item["images"].unsqueeze(0))["content"][0])
            assert row["copper_content"] == pytest.approx(alone, abs=1e-5)


def test_predict_on_a_folder_without_photos_is_a_one_line_error(trained, tmp_path):
    task, result, _ = trained
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        task.predict(task.build_model(), tmp_path / "empty", tmp_path, argparse.Namespace(images_per_sample=0))
    assert "\n" not in str(info.value)


def test_predict_on_a_list_of_sample_folders(tmp_path):
    task = tiny_task(tmp_path)
    model = task.build_model().eval()
    write_dataset(tmp_path / "data", GeneratorSpec(image_size=48, stirs=3), {"test": 2})
    samples = tmp_path / "data" / "test"
    args = argparse.Namespace(images_per_sample=0)
    folder = task.predict(model, samples, tmp_path / "folder", args).read_text()
    (samples / "list.csv").write_text("sample\nsample_00001\nsample_00000\n")
    listed = task.predict(model, samples / "list.csv", tmp_path / "listed", args).read_text().splitlines()
    assert listed[0] == folder.splitlines()[0] and sorted(listed[1:]) == folder.splitlines()[1:]
    assert listed[1].startswith("sample_00001,3,")  # the list's order
    for entry, message in (("sample_00000/sample.json", "which is not a sample folder"),
                           ("../../outside", "points outside")):
        (samples / "bad.txt").write_text(f"{entry}\n")
        with pytest.raises(DataError, match=message) as info:
            task.predict(model, samples / "bad.txt", tmp_path / "bad", args)
        assert "bad.txt" in str(info.value) and "\n" not in str(info.value)


def test_disk_data_root_trains_through_the_reader(tmp_path):
    write_dataset(tmp_path / "data", GeneratorSpec(image_size=48, field_mm=15.0, stirs=2), {"train": 4, "val": 2})
    task = tiny_task(tmp_path, f"data.root={tmp_path / 'data'}", "train.epochs=1")
    train, val = task.build_datasets()
    assert len(train) == 4 and len(val) == 2
    assert len(task.build_eval_dataset()) == 2  # no test split: falls back to val
    metrics = Trainer(task).fit().metrics
    assert math.isfinite(metrics["val_content_mae_pp"])
    broken = dataclasses.replace(task.cfg, data=dataclasses.replace(task.cfg.data, root=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="not found"):
        CanetTask(broken).build_datasets()


def test_eval_scores_every_photo_of_each_sample_even_when_counts_differ(trained, tmp_path):
    from scrapvision.api import eval_loader, evaluate

    _, result, _ = trained
    write_dataset(tmp_path / "data", GeneratorSpec(image_size=48, stirs=3), {"train": 2, "test": 4})
    sample = tmp_path / "data" / "test" / "sample_00001"
    for folder in ("images", "masks"):  # sample 1 keeps 2 photos, the others 3
        sorted((sample / folder).iterdir())[-1].unlink()
    task = tiny_task(tmp_path, f"data.root={tmp_path / 'data'}")
    model = task.build_model()
    model.load_state_dict(torch.load(result.best_path, weights_only=True)["model"])
    model.eval()
    dataset = task.build_eval_dataset()
    assert [len(dataset[i]["images"]) for i in range(4)] == [3, 2, 3, 3]  # not the training N = 2
    assert isinstance(next(iter(eval_loader(task, batch_size=4))), list)  # one sub-batch per photo count
    with torch.no_grad():
        alone = [float(model(dataset[i]["images"][None])["content"][0]) - float(dataset[i]["content"])
                 for i in range(4)]
        metrics = evaluate(task, model, batch_size=4)
    assert metrics["content_mae_pp"] == pytest.approx(100 * sum(map(abs, alone)) / 4, abs=1e-4)
    fixed = tiny_task(tmp_path, f"data.root={tmp_path / 'data'}", "data.eval_images_per_sample=2").build_eval_dataset()
    assert [len(fixed[i]["images"]) for i in range(4)] == [2, 2, 2, 2]
