"""The segdec network: the paper's layer table, output shapes, stop-gradient, backbone swap."""

from __future__ import annotations

import pytest
import torch
from timm.layers import SEModule
from torch import nn

from scrapvision.backbones import create_backbone
from scrapvision.config import load_config
from scrapvision.heads.segdec import SegDecConfig, SegDecTask
from scrapvision.models.segdec import BackboneEncoder, SegDecNet, SegEncoder


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d) and not _inside_se(module, m)]


def _inside_se(root: nn.Module, conv: nn.Conv2d) -> bool:
    return any(conv is c for se in root.modules() if isinstance(se, SEModule) for c in se.modules())


def test_layer_table_atrous_matches_bi_et_al() -> None:
    enc = SegEncoder(in_chans=1, atrous=True, attention=True)
    convs = _convs(enc)
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 64, 64, 64, 64, 64, 1024]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 10
    assert [c.dilation for c in convs] == [(2, 2)] * 9 + [(7, 7)]
    # the layer sequence: pools after conv2, conv5, conv9; SE after conv3..conv10
    kinds = []
    for m in enc.layers:
        kinds.append("se" if isinstance(m, SEModule) else "pool" if isinstance(m, nn.MaxPool2d) else "conv")
    assert kinds == ["conv", "conv", "pool", "conv", "se", "conv", "se", "conv", "se", "pool",
                     "conv", "se", "conv", "se", "conv", "se", "conv", "se", "pool", "conv", "se"]


def test_layer_table_without_atrous_or_attention_is_the_original() -> None:
    enc = SegEncoder(atrous=False, attention=False)
    convs = _convs(enc)
    assert [c.kernel_size for c in convs] == [(5, 5)] * 9 + [(15, 15)]
    assert all(c.dilation == (1, 1) for c in convs)
    assert not any(isinstance(m, SEModule) for m in enc.modules())


@pytest.mark.parametrize("atrous", [True, False])
def test_forward_shapes_and_decision_head(atrous: bool) -> None:
    widths = (4, 4, 8, 8, 8, 8, 8, 8, 8, 16)
    net = SegDecNet(SegEncoder(1, widths, atrous=atrous), atrous=atrous).eval()
    decision, seg = net(torch.rand(2, 1, 72, 80))
    assert decision.shape == (2,) and seg.shape == (2, 1, 9, 10)
    head_convs = [m for m in net.decision.modules() if isinstance(m, nn.Conv2d)]
    assert [c.in_channels for c in head_convs] == [17, 8, 16] and [c.out_channels for c in head_convs] == [8, 16, 32]
    assert head_convs[0].dilation == ((2, 2) if atrous else (1, 1))
    assert net.decision.fc.in_features == 66
    with pytest.raises(ValueError, match="too small"):
        net(torch.rand(1, 1, 64, 64))


def test_paper_network_output_at_stride_8() -> None:
    net = SegDecNet(SegEncoder()).eval()
    decision, seg = net(torch.rand(1, 1, 72, 72))
    assert seg.shape == (1, 1, 9, 9) and net.seg_head.in_channels == 1024 and net.decision.fc.in_features == 66


def test_stop_gradient_blocks_decision_loss_for_the_whole_batch() -> None:
    torch.manual_seed(0)
    net = SegDecNet(SegEncoder(1, (4,) * 9 + (8,)), stop_gradient=True).train()
    x = torch.rand(2, 1, 72, 72)

    def grads() -> tuple[float, float]:
        net.zero_grad()
        decision, _ = net(x)
        decision.sum().backward()
        total = lambda params: sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)  # noqa: E731
        return total(net.encoder.parameters()), total(net.decision.parameters())

    encoder, decision = grads()
    assert encoder == 0.0 and decision > 0.0
    net.stop_gradient = False
    assert grads()[0] > 0.0


@pytest.mark.parametrize(("supervision", "detached"), [("full", True), ("weak", False), ("mixed", False)])
def test_task_detaches_the_decision_only_in_full_supervision(supervision: str, detached: bool) -> None:
    cfg = load_config(SegDecConfig, None, [f"data.supervision={supervision}", "model.stop_gradient=true"])
    assert SegDecTask(cfg).build_model().stop_gradient is detached


@pytest.mark.parametrize("name", ["tiny_cnn", "test_resnet"])
def test_backbone_encoder_swaps_in(name: str) -> None:
    probe = create_backbone(name, in_chans=1)
    index = list(probe.feature_info.reduction()).index(8)
    encoder = BackboneEncoder(create_backbone(name, out_indices=(index,), in_chans=1))
    net = SegDecNet(encoder).eval()
    decision, seg = net(torch.rand(2, 1, 72, 72))
    assert decision.shape == (2,) and seg.shape == (2, 1, 9, 9) and net.stride == 8


def test_feature_norm_is_the_reference_normalisation_that_keeps_response_strength() -> None:
    """FeatureNorm divides by sqrt(std): a response k times stronger comes out sqrt(k) times wider,
    where InstanceNorm2d makes both the same (the reference code's formula, checked against a plain loop)."""
    from scrapvision.models.segdec import FeatureNorm

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7)
    norm, instance = FeatureNorm(3), torch.nn.InstanceNorm2d(3, affine=True, eps=1e-3)
    out = norm(x)
    for b in range(2):
        for c in range(3):
            values = x[b, c].flatten().tolist()
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
            expected = (x[b, c] - mean) / (std + 1e-3) ** 0.5
            torch.testing.assert_close(out[b, c], expected, rtol=1e-5, atol=1e-5)
    ratio = norm(16 * x).std(dim=(2, 3)) / out.std(dim=(2, 3))
    torch.testing.assert_close(ratio, torch.full_like(ratio, 4.0), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(instance(16 * x), instance(x), rtol=1e-3, atol=1e-3)
