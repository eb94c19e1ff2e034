"""SimMIM pretraining (``model.method=simmim``): the loss counts hidden pixels only, the masks are seeded and
exact, the backbone sees the learnt fill exactly in the hidden units, its backbone loads into clip_anomaly, and
bad unit sizes are one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import one_line_error
from scrapvision import TASKS
from scrapvision.api import build_task, load_trained, train
from scrapvision.cli import main
from scrapvision.data.unlabeled import MaskedViews
from scrapvision.heads import load_all
from scrapvision.models.ssl import MaskedImageNet, masked_l1, unit_mask

load_all()
SMOKE = [*TASKS.get("pretrain").smoke_overrides, "model.method=simmim", "data.mask_unit=8", "model.backbone=clip_scrap_tiny"]
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest's


def test_the_loss_counts_the_hidden_pixels_only():
    torch.manual_seed(0)
    target, rebuilt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    mask = torch.zeros(2, 2, 2, dtype=torch.bool)
    mask[0, 0, 1] = mask[1, 1, 0] = True
    hidden = unit_mask(mask, (16, 16))
    assert hidden.shape == (2, 1, 16, 16) and hidden[0, 0, :8, 8:].all() and hidden.sum() == 2 * 64
    loss = masked_l1(rebuilt, target, mask)
    torch.testing.assert_close(loss, (rebuilt - target).abs()[hidden.expand(-1, 3, -1, -1).bool()].mean())
    visible_changed = rebuilt + 5 * (1 - hidden)
    torch.testing.assert_close(masked_l1(visible_changed, target, mask), loss)
    assert masked_l1(rebuilt + hidden, target, mask) > loss + 0.5


def test_masks_are_seeded_per_image_and_epoch_and_hide_the_stated_share():
    images = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(3)]
    views = MaskedViews(images, crop_size=32, min_scale=0.5, mask_unit=8, mask_ratio=0.6, seed=1)
    first = [views[i]["mask"] for i in range(3)]
    assert all(m.shape == (4, 4) and int(m.sum()) == round(0.6 * 16) for m in first)
    assert all(torch.equal(a, views[i]["mask"]) for i, a in enumerate(first))  # the same draw again
    assert not torch.equal(first[0], first[1])
    views.set_epoch(1)
    assert not all(torch.equal(a, views[i]["mask"]) for i, a in enumerate(first))


def test_the_backbone_sees_the_fill_in_hidden_units_and_the_image_elsewhere():
    task = build_task("pretrain", overrides=SMOKE)
    model = task.build_model()
    assert isinstance(model, MaskedImageNet)
    with torch.no_grad():
        model.fill.copy_(torch.tensor([7.0, 8.0, 9.0]).view(1, 3, 1, 1))
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    x = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 2, 1] = True
    out = model(x, mask)
    assert out["reconstruction"].shape == x.shape
    inside = seen[0][0, :, 16:24, 8:16]
    assert torch.equal(inside, torch.tensor([7.0, 8.0, 9.0]).view(3, 1, 1).expand(3, 8, 8))
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[16:24, 8:16] = False
    assert torch.equal(seen[0][0][:, outside], x[0][:, outside])


def test_simmim_backbone_loads_into_clip_anomaly_and_reports_its_worst_reconstructions(tmp_path, capsys):
    overrides = [*SMOKE, "train.epochs=4", "optim.warmup_epochs=0"]
    result = train("pretrain", overrides=overrides, run_dir=tmp_path / "run")
    weights = result.run_dir / "backbone.safetensors"
    task = build_task("clip_anomaly", overrides=[*TASKS.get("clip_anomaly").smoke_overrides, f"model.weights={weights}"])
    state, saved = task.build_model().state_dict(), load_file(str(weights))
    conv = next(v for k, v in state.items() if k.endswith("visual.conv1.weight"))
    torch.testing.assert_close(conv, saved["visual.conv1.weight"], rtol=0, atol=0)
    assert f"loaded {len(saved)} of the backbone's" in capsys.readouterr().err
    pretrain, model = load_trained("pretrain", result.run_dir / "last.pt")
    loader = torch.utils.data.DataLoader(pretrain.build_datasets()[1], batch_size=2)
    plot = pretrain.write_report(model, loader, tmp_path)
    assert plot[0].name == "worst_reconstructions.png" and plot[0].stat().st_size > 1000


@pytest.mark.parametrize("setting, message", [
    (["data.mask_unit=12"], "data.mask_unit=12 must divide data.crop_size=32"),
    (["model.backbone=tiny_cnn"], "tiny_cnn's last feature map has stride 32"),
    (["data.mask_ratio=1"], "data.mask_ratio"),
])
def test_bad_unit_sizes_are_one_line_exit_2(setting, message, tmp_path, capsys):
    args = ["train", "--task", "pretrain", "--out", str(tmp_path)]
    for item in [*SMOKE, *setting]:
        args += ["--set", item]
    assert main(args) == 2
    assert message in one_line_error(capsys)
