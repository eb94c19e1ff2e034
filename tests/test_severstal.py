import csv
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import real_dataset
from scrapvision.api import build_task, load_trained, train
from scrapvision.cli import main
from scrapvision.data.rle import rle_decode
from scrapvision.data.synthetic.steel_strip import write_kaggle_layout
from scrapvision.errors import ConfigError, ScrapvisionError
from scrapvision.heads.severstal import postprocess
from scrapvision.models.severstal import SeverstalNet

TINY = [
    "model.backbone=tiny_cnn", "model.decoder_channels=[32,16,16,8,8]", "data.image_size=[32,192]",
    "data.synthetic_shape=[64,384]", "data.synthetic_train=24", "data.synthetic_val=8", "train.epochs=2",
    "train.batch_size=4", "optim.lr=0.01",
]


@pytest.mark.parametrize("arch", ["unet", "fpn"])
def test_model_shapes(arch):
    model = SeverstalNet("tiny_cnn", arch=arch, decoder_channels=(16, 16, 8, 8, 8), fpn_channels=32)
    masks, labels = model(torch.randn(2, 3, 64, 320))
    assert masks.shape == (2, 4, 64, 320) and labels.shape == (2, 4)


def test_model_rejects_backbone_without_five_stages():
    with pytest.raises(ScrapvisionError, match="5 stages of strides 2..32"):
        SeverstalNet("test_vit")


def test_postprocess_threshold_min_area_and_gate():
    logits = torch.full((1, 4, 4, 4), -5.0)
    logits[0, 0, :2, :2] = 5.0  # class 1: 4 pixels
    logits[0, 1, 0, 0] = 5.0  # class 2: 1 pixel
    logits[0, 2] = 0.2  # class 3: p=0.55 everywhere
    labels = torch.sigmoid(torch.tensor([[5.0, 5.0, 5.0, -5.0]]))
    out = postprocess(logits, labels, (4, 4), (0.5, 0.5, 0.6, 0.5), (0, 2, 0, 0), 0.0)
    assert out[0, 0].sum() == 4 and out[0, 1].sum() == 0 and out[0, 2].sum() == 0
    logits[0, 3] = 5.0
    gated = postprocess(logits, labels, (4, 4), (0.5,) * 4, (0,) * 4, 0.5)
    assert gated[0, 3].sum() == 0 and gated[0, 0].sum() == 4
    assert postprocess(logits, labels, (4, 4), (0.5,) * 4, (0,) * 4, 0.0)[0, 3].sum() == 16
    per_class_gate = postprocess(logits, labels, (4, 4), (0.5,) * 4, (0,) * 4, (0.0, 0.0, 0.0, 0.01))
    assert per_class_gate[0, 3].sum() == 0 and per_class_gate[0, 0].sum() == 4


def test_post_config_needs_four_values():
    with pytest.raises(ConfigError, match="post.threshold"):
        build_task("severstal", overrides=["post.threshold=[0.5, 0.5]"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sev") / "run"
    return train("severstal", overrides=TINY, run_dir=out)


def test_short_training_learns(trained):
    rows = list(csv.DictReader(open(trained.run_dir / "metrics.csv")))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert trained.best_metric == pytest.approx(max(float(r["val_dice"]) for r in rows))


def test_reloaded_checkpoint_gives_identical_outputs(trained):
    task, model = load_trained("severstal", trained.best_path)
    _, again = load_trained("severstal", trained.best_path)
    x = task.example_input(2)
    for a, b in zip(model(x), again(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cli_eval_and_predict_on_kaggle_layout(trained, tmp_path, capsys):
    data = write_kaggle_layout(tmp_path / "kaggle", n=6, seed=7, shape=(64, 384))
    assert main(["eval", "--task", "severstal", "--checkpoint", str(trained.best_path), "--data", str(data),
                 "--out", str(tmp_path / "m.json")]) == 0
    assert "dice" in capsys.readouterr().out and (tmp_path / "m.json").is_file()
    out = tmp_path / "pred"
    assert main(["predict", "--task", "severstal", "--checkpoint", str(trained.best_path),
                 "--input", str(data / "train_images"), "--out", str(out), "--overlays", "2"]) == 0
    rows = list(csv.DictReader(open(out / "submission.csv")))
    assert len(rows) == 6 * 4 and {r["ClassId"] for r in rows} == {"1", "2", "3", "4"}
    for r in rows:
        assert rle_decode(r["EncodedPixels"], (64, 384)).shape == (64, 384)
    assert len(list((out / "overlays").glob("*.png"))) == 2


def test_cli_errors_are_one_line_exit_2(trained, tmp_path, capsys):
    assert main(["eval", "--task", "severstal", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert main(["train", "--task", "severstal", "--set", "optim.lr=fast"]) == 2
    assert main(["eval", "--task", "severstal", "--checkpoint", str(trained.best_path), "--data",
                 str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("scrapvision: error:") for line in err)
    assert "not found" in err[0] and "optim.lr" in err[1] and "missing" in err[2]


def test_eval_and_predict_on_real_severstal_sample(trained, tmp_path, capsys):
    data = real_dataset("severstal_sample")
    assert main(["eval", "--task", "severstal", "--checkpoint", str(trained.best_path), "--data", str(data)]) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    assert float(printed["images"]) == 16  # only the images whose RLE is complete are scored
    per_class = [float(printed[f"dice_c{c}"]) for c in range(1, 5)]  # every image scores all 4 classes
    assert float(printed["dice"]) == pytest.approx(sum(per_class) / 4, abs=2e-4)
    out = tmp_path / "real"
    assert main(["predict", "--task", "severstal", "--checkpoint", str(trained.best_path), "--input",
                 str(data / "train_images"), "--out", str(out), "--overlays", "1"]) == 0
    rows = list(csv.DictReader(open(out / "submission.csv")))
    assert len(rows) == 47 * 4
    for r in rows:
        assert rle_decode(r["EncodedPixels"], (256, 1600)).shape == (256, 1600)


def test_console_script_help_teaches():
    out = subprocess.run([sys.executable, "-m", "scrapvision", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--resume" in out.stdout and "example" in out.stdout


def test_help_examples_name_the_task_asked_about():
    out = subprocess.run([sys.executable, "-m", "scrapvision", "predict", "--task", "canet", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "scrapvision predict --task canet" in out.stdout
    assert "--task severstal" not in out.stdout and "--images-per-sample" in out.stdout


def test_empty_masks_score_one_when_truth_is_empty():
    from scrapvision.metrics import kaggle_dice

    empty = np.zeros((2, 4, 8, 8), bool)
    assert kaggle_dice(empty, empty) == 1.0


def test_image_labelled_images_train_the_classifier_and_never_the_masks(tmp_path):
    """data.image_labels: images without masks join training; the mask loss ignores them (their masks are
    unknown, not empty) and the classifier learns their classes; validation keeps only masked images."""
    data = write_kaggle_layout(tmp_path / "kaggle", n=8, seed=3, shape=(64, 384))
    extra = write_kaggle_layout(tmp_path / "extra", n=3, seed=4, shape=(64, 384))
    for image in sorted((extra / "train_images").iterdir()):
        image.rename(data / "train_images" / f"weak_{image.name}")
    weak_files = sorted((data / "train_images").glob("weak_*"))
    (data / "weak.csv").write_text("ImageId,ClassId\n" + "".join(f"{p.name},{k}\n" for k, p in zip((3, 0, 1), weak_files)))
    task = build_task("severstal", overrides=[*TINY, "data.image_labels=weak.csv"], data=data)
    train_set, val_set = task.build_datasets()
    weak = [r for r in train_set.records if not r.pixel_labelled]
    assert len(weak) == 3 and not any(not r.pixel_labelled for r in val_set.dataset.records)
    assert [r.labels for r in weak] == [(False, False, True, False), (False,) * 4, (True, False, False, False)]

    torch.manual_seed(0)
    model = task.build_model().eval()  # the same outputs on every call: only the targets change below
    batch = torch.utils.data.default_collate([train_set[i] for i in range(len(train_set))])
    loss, _ = task.compute_loss(model, batch, 0.0)
    pixel = batch["pixel_labelled"] > 0.5
    scribbled = dict(batch, mask=batch["mask"].clone())
    scribbled["mask"][~pixel] = 1.0  # any mask on the image-labelled images: the loss must not see it
    assert task.compute_loss(model, scribbled, 0.0)[0].item() == pytest.approx(loss.item(), abs=1e-6)
    flipped = dict(batch, present=batch["present"].clone())
    flipped["present"][~pixel] = 1 - flipped["present"][~pixel]  # their classes do reach the classifier loss
    assert task.compute_loss(model, flipped, 0.0)[0].item() != pytest.approx(loss.item(), abs=1e-4)
    only_weak = {k: (v[~pixel] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    weak_loss, logs = task.compute_loss(model, only_weak, 0.0)
    assert logs["bce"] == 0 and logs["dice_loss"] == 0 and weak_loss.requires_grad

    with pytest.raises(ConfigError, match="data.image_labels"):
        build_task("severstal", overrides=[*TINY, "data.image_labels=weak.csv", "model.classifier=false"], data=data)
    with pytest.raises(ConfigError, match="Kaggle layout"):
        build_task("severstal", overrides=[*TINY, "data.image_labels=weak.csv"]).build_datasets()
