import pytest
import torch
from safetensors.torch import save_file

from scrapvision.backbones import backbone_channels, backbone_strides, create_backbone
from scrapvision.errors import CheckpointError, ScrapvisionError


@pytest.mark.parametrize("name", ["tiny_cnn", "test_resnet", "test_efficientnet"])
def test_features_match_feature_info(name):
    model = create_backbone(name).eval()
    feats = model(torch.randn(2, 3, 64, 96))
    assert [f.shape[1] for f in feats] == backbone_channels(model)
    assert [64 // f.shape[2] for f in feats] == backbone_strides(model)


def test_out_indices_and_in_chans():
    model = create_backbone("tiny_cnn", out_indices=(1, 3), in_chans=1)
    feats = model(torch.randn(1, 1, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 4]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_reload_gives_identical_outputs(tmp_path, suffix):
    torch.manual_seed(0)
    source = create_backbone("test_resnet").eval()
    path = tmp_path / f"w{suffix}"
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}  # a prefix as trainers often add
    if suffix == ".pt":
        torch.save({"state_dict": state}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    torch.manual_seed(1)
    fresh = create_backbone("test_resnet").eval()
    x = torch.randn(2, 3, 64, 64)
    assert not torch.allclose(fresh(x)[-1], source(x)[-1])
    loaded = create_backbone("test_resnet", weights=path).eval()
    for a, b in zip(loaded(x), source(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_full_classifier_checkpoint_loads_into_features_model(tmp_path):
    import timm

    full = timm.create_model("test_resnet", pretrained=False).eval()
    torch.save(full.state_dict(), tmp_path / "full.pt")
    feats = create_backbone("test_resnet", weights=tmp_path / "full.pt").eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(feats(x)[-1], full.forward_features(x))


def test_wrong_weights_are_one_line_errors(tmp_path):
    torch.save(create_backbone("tiny_cnn").state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="does not fit this backbone"):
        create_backbone("test_resnet", weights=tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="not found"):
        create_backbone("tiny_cnn", weights=tmp_path / "missing.pt")
    with pytest.raises(ScrapvisionError, match="unknown backbone 'no_such_net'"):
        create_backbone("no_such_net")


def test_timm_assert_without_a_message_is_a_one_line_error():
    # timm's ResNet checks output_stride with a bare assert: the AssertionError's message is empty
    with pytest.raises(ScrapvisionError, match=r"^backbone 'test_resnet': AssertionError$"):
        create_backbone("test_resnet", output_stride=7)


def test_out_indices_beyond_the_last_stage_is_a_one_line_error():
    with pytest.raises(ScrapvisionError, match=r"^backbone 'test_efficientnet' \(out_indices \(2, 9\)\): "):
        create_backbone("test_efficientnet", out_indices=(2, 9))
