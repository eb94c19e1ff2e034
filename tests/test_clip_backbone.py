"""open_clip encoders without downloads: tokenizer, weights files and folders, multi-scale patch tokens."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from scrapvision.backbones import create_backbone
from scrapvision.backbones.clip import CLIP_CONFIGS, ClipPatchTokens, build_clip, clip_tokenizer, even_blocks
from scrapvision.errors import CheckpointError, ScrapvisionError

TINY = "scrap-vit-tiny"


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: nothing may be downloaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_tokenizer_vocab_ships_with_open_clip(no_network):
    from open_clip.tokenizer import default_bpe

    assert Path(default_bpe()).is_file()
    model = build_clip(TINY, image_size=32)
    tok = clip_tokenizer(TINY, model)
    ids = tok(["object which is made of steel", "object which is not steel but copper wire"])
    assert ids.shape == (2, CLIP_CONFIGS[TINY]["text_cfg"]["context_length"])
    assert not torch.equal(ids[0], ids[1])
    assert (ids[:, 0] == ids[0, 0]).all()  # both start with the start-of-text token
    assert torch.equal(clip_tokenizer("ViT-B-16", model)(["steel"]), tok(["steel"]))


def test_pretrained_tags_and_unknown_names_are_refused(no_network):
    with pytest.raises(CheckpointError, match="openai.*not found"):
        build_clip("ViT-B-16", weights="openai")
    with pytest.raises(ScrapvisionError, match="unknown CLIP model 'no-such-clip'"):
        build_clip("no-such-clip")
    with pytest.raises(ScrapvisionError, match="hf-hub"):
        build_clip("hf-hub:org/model")


def _outputs(model, image):
    with torch.no_grad():
        return model.encode_image(image), model.encode_text(torch.arange(1, 33)[None].repeat(2, 1))


def test_weights_file_round_trip_gives_identical_outputs(tmp_path, no_network):
    torch.manual_seed(1)
    first = build_clip(TINY, image_size=32).eval()
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in first.state_dict().items()}, str(path))
    torch.manual_seed(2)
    second = build_clip(TINY, weights=path, image_size=32).eval()
    image = torch.randn(2, 3, 32, 32)
    for a, b in zip(_outputs(first, image), _outputs(second, image)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    resized = build_clip(TINY, weights=path, image_size=48)  # position grid 4x4 -> 6x6, resampled
    assert resized.visual.positional_embedding.shape[0] == 6 * 6 + 1


def test_weights_folder_and_mismatched_file(tmp_path, no_network):
    torch.manual_seed(3)
    model = build_clip(TINY, image_size=32)
    folder = tmp_path / "my_clip"
    folder.mkdir()
    cfg = dict(CLIP_CONFIGS[TINY], vision_cfg=dict(CLIP_CONFIGS[TINY]["vision_cfg"], image_size=32))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    torch.save({}, folder / "a_stray_file.pt")  # open_clip's own file name wins over other weights files
    loaded = build_clip("ignored-when-a-folder-is-given", weights=folder, image_size=32)
    torch.testing.assert_close(loaded.visual.conv1.weight, model.visual.conv1.weight)
    bad = tmp_path / "bad.pt"
    torch.save({"visual.conv1.weight": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="do not fit"):
        build_clip(TINY, weights=bad, image_size=32)


def test_patch_tokens_are_multiscale_maps():
    assert even_blocks(12) == (2, 5, 8, 11)
    assert even_blocks(24) == (5, 11, 17, 23)
    assert even_blocks(2) == (0, 1)
    model = build_clip(TINY, image_size=(32, 48))
    tokens = ClipPatchTokens(model.visual, (1, 3))
    feats = tokens(torch.randn(2, 3, 32, 48))
    assert [tuple(f.shape) for f in feats] == [(2, 96, 4, 6)] * 2
    assert tokens.feature_info.channels() == [96, 96] and tokens.feature_info.reduction() == [8, 8]
    assert len(tokens.visual.transformer.resblocks) == 4 and tokens.visual.proj is None
    with pytest.raises(ScrapvisionError, match="expects"):
        tokens(torch.randn(1, 3, 32, 32))
    with pytest.raises(ScrapvisionError, match="blocks"):
        ClipPatchTokens(build_clip(TINY, image_size=32).visual, (7,))
    with pytest.raises(ScrapvisionError, match="multiple of the patch size"):
        ClipPatchTokens(build_clip(TINY, image_size=(32, 36)).visual)


def test_registered_clip_backbone():
    backbone = create_backbone("clip_scrap_tiny", out_indices=(0, 2), image_size=32)
    assert [tuple(f.shape) for f in backbone(torch.randn(1, 3, 32, 32))] == [(1, 96, 4, 4)] * 2
    with pytest.raises(ScrapvisionError, match="3-channel"):
        create_backbone("clip_scrap_tiny", in_chans=1, image_size=32)


def test_fused_attention_matches_open_clips_multihead_attention():
    """The image tower's attention is swapped for one qkv projection + SDPA: same state-dict keys, same
    patch tokens and gradients as open_clip's own nn.MultiheadAttention, and the same masking convention."""
    from scrapvision.backbones.clip import FusedSelfAttention

    torch.manual_seed(0)
    reference = build_clip(TINY, image_size=32).visual.train()
    fused = ClipPatchTokens(build_clip(TINY, image_size=32).visual, (1, 3)).train()
    assert all(isinstance(b.attn, FusedSelfAttention) for b in fused.visual.transformer.resblocks)
    missing, unexpected = fused.visual.load_state_dict(reference.state_dict(), strict=False)
    assert not missing and all(not k.startswith("transformer.") for k in unexpected)  # pruned head keys only
    x = torch.randn(2, 3, 32, 32)
    want = reference.forward_intermediates(x, indices=[1, 3], intermediates_only=True, output_fmt="NLC")
    got = fused.tokens(x)
    for a, b in zip(want["image_intermediates"], got):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    sum(t.square().sum() for t in want["image_intermediates"]).backward()
    sum(t.square().sum() for t in got).backward()
    ref_grad = reference.transformer.resblocks[0].attn.in_proj_weight.grad
    torch.testing.assert_close(fused.visual.transformer.resblocks[0].attn.in_proj_weight.grad, ref_grad,
                               rtol=1e-4, atol=1e-5)

    mha = torch.nn.MultiheadAttention(16, 2, batch_first=True).eval()
    tokens, blocked = torch.randn(3, 5, 16), torch.zeros(5, 5, dtype=torch.bool)
    blocked[:, 3:] = True  # nobody attends to the last two tokens
    with torch.no_grad():
        torch.testing.assert_close(FusedSelfAttention(mha)(tokens, tokens, tokens, attn_mask=blocked)[0],
                                   mha(tokens, tokens, tokens, need_weights=False, attn_mask=blocked)[0],
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ScrapvisionError, match="self-attention"):
        FusedSelfAttention(mha)(tokens, torch.randn(3, 5, 16), torch.randn(3, 5, 16))
