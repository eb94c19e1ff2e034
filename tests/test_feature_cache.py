"""The probe's frozen-feature cache is only ever a cache: the same logits as the plain forward, the backbone
skipped for photos it has seen, stale rows dropped when the weights change, and exports untouched."""

from __future__ import annotations

import onnx
import pytest
import torch

from scrapvision.api import build_task
from scrapvision.engines import OnnxEngine
from scrapvision.export import export_onnx
from scrapvision.models.clfsef import ScrapClassifier
from scrapvision.models.feature_cache import FrozenFeatureCache


def counted_probe(seed: int = 0) -> tuple[ScrapClassifier, list[int]]:
    torch.manual_seed(seed)
    model = ScrapClassifier(3, "test_efficientnet", "probe", dropout=0.0)
    images_seen = [0]
    model.backbone.register_forward_hook(lambda _m, args, _out: images_seen.__setitem__(0, images_seen[0] + len(args[0])))
    return model, images_seen


def uncached(model: ScrapClassifier, x: torch.Tensor) -> torch.Tensor:
    return model.head(model.standardize(model.pooled_stages(x)))


@pytest.mark.parametrize("training", [True, False])
def test_cached_logits_are_the_plain_forward_and_seen_photos_skip_the_backbone(training):
    model, images_seen = counted_probe()
    model.train(training)
    x = torch.rand(6, 3, 64, 64)
    first = model(x)
    assert images_seen[0] == 6
    again = model(x[[5, 0, 3, 1, 4, 2]])  # the same photos reshuffled, as the next epoch draws them
    assert images_seen[0] == 6, "the frozen backbone ran again on photos it had seen"
    torch.testing.assert_close(again, uncached(model, x[[5, 0, 3, 1, 4, 2]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(first, uncached(model, x), rtol=0, atol=1e-6)
    mixed = torch.cat([x[:2], torch.rand(3, 3, 64, 64)])
    before = images_seen[0]
    got = model(mixed)
    assert images_seen[0] == before + 3, "only the 3 new photos should reach the backbone"
    torch.testing.assert_close(got, uncached(model, mixed), rtol=0, atol=1e-6)


@pytest.mark.parametrize("change", ["load_state_dict", "in_place_data", "to_double"])
def test_changed_weights_empty_the_cache(change):
    model, _ = counted_probe()
    model.eval()
    x = torch.rand(4, 3, 64, 64)
    stale = model(x)
    if change == "load_state_dict":
        other, _ = counted_probe(seed=1)
        model.load_state_dict(other.state_dict())
    elif change == "in_place_data":  # .data edits leave a tensor's version counter alone
        model.backbone.conv_stem.weight.data.mul_(2.0)
    else:
        model.double()
        x = x.double()
    fresh = model(x)
    if change == "to_double":  # the same weights, now in float64: the rows must be recomputed in float64
        assert fresh.dtype == torch.float64
    else:
        assert not torch.allclose(fresh, stale, atol=1e-4), "the cache answered with the old weights"
    torch.testing.assert_close(fresh, uncached(model, x), rtol=0, atol=1e-6)


def test_a_trainable_backbone_is_never_cached():
    model, images_seen = counted_probe()
    model.backbone.requires_grad_(True)
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    model(x), model(x)
    assert images_seen[0] == 4


def test_the_bound_drops_the_oldest_rows_first():
    cache = FrozenFeatureCache(max_floats=3 * 5)  # room for three rows of five values
    module = torch.nn.Linear(2, 5).eval().requires_grad_(False)
    x = torch.rand(4, 2)
    out = cache(module, module, x)
    torch.testing.assert_close(out, module(x), rtol=0, atol=0)
    assert len(cache.rows) == 3 and cache.floats == 15
    cache(module, module, x[3:])
    assert (cache.hits, cache.misses) == (1, 4), "the newest row should have survived the bound"


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_an_exported_probe_holds_its_backbone(exporter, tmp_path):
    task = build_task("scrap_cls", overrides=["model.variant=probe", "model.backbone=test_efficientnet",
                                              "data.image_size=64"])
    torch.manual_seed(0)
    model = task.build_model().eval()
    model(task.example_input(2))  # fills the cache with the very input the exporter traces
    path = export_onnx(task, model, tmp_path / "probe.onnx", exporter=exporter)
    assert any(node.op_type == "Conv" for node in onnx.load(str(path)).graph.node)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(OnnxEngine(path)(x), model(x), atol=1e-4, rtol=1e-4)
