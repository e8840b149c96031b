"""Hugging Face video encoders → ViViT: each reference built by transformers with random weights."""

import pytest
import torch

from videossl.errors import VideosslError
from videossl.models.convert import CONVERTERS
from videossl.models.vivit import ViViT

transformers = pytest.importorskip("transformers")

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def perturb(ref):
    """Random biases and norm parameters too, not just the default init (zeros / ones)."""
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)


def ours(conv):
    m = ViViT(**conv.init_args)
    report = m.load_pretrained(conv.state_dict)
    assert report.clean, report.describe()
    return m.eval()


def check(ref, conv, x, ref_tokens, ref_pooled=None):
    m = ours(conv)
    with torch.no_grad():
        toks, pooled = m(x, return_tokens=True), m(x)
    err = (toks - ref_tokens).abs().max().item()
    assert err <= 1e-5, err
    if ref_pooled is not None:
        assert (pooled - ref_pooled).abs().max().item() <= 1e-5
    return err


@pytest.mark.parametrize("frames", [8, 16])
@pytest.mark.parametrize("layout", ["base", "pretraining", "classifier"])
def test_videomae(frames, layout):
    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=8, num_frames=frames, tubelet_size=2, **SMALL,
                                      use_mean_pooling=layout != "base", num_labels=5,
                                      decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                                      decoder_intermediate_size=64)
    torch.manual_seed(frames)
    cls = {"base": transformers.VideoMAEModel, "pretraining": transformers.VideoMAEForPreTraining,
           "classifier": transformers.VideoMAEForVideoClassification}[layout]
    ref = cls(cfg).eval()
    perturb(ref)
    conv = CONVERTERS["hf-videomae"](ref.state_dict(), cfg.to_dict())
    x = torch.randn(2, 3, frames, 32, 32)
    base = ref if layout == "base" else ref.videomae
    with torch.no_grad():
        tokens = base(x.transpose(1, 2)).last_hidden_state
    pooled = tokens.mean(1)
    if layout == "classifier":
        pooled = ref.fc_norm(pooled)
    if layout == "pretraining":
        assert any(k.startswith("decoder.") for k in conv.dropped) and "mask_token" in conv.dropped
    err = check(ref, conv, x, tokens, pooled)
    print(f"hf-videomae {layout} {frames}f max abs diff {err:.2e}")


@pytest.mark.parametrize("frames", [8, 16])
def test_vjepa2_rope(frames):
    cfg = transformers.VJEPA2Config(crop_size=32, patch_size=8, frames_per_clip=16, tubelet_size=2, hidden_size=96,
                                    num_hidden_layers=2, num_attention_heads=4, pred_hidden_size=32,
                                    pred_num_hidden_layers=1, pred_num_attention_heads=2, num_pooler_layers=1)
    torch.manual_seed(frames)
    ref = transformers.VJEPA2Model(cfg).eval()
    perturb(ref)
    conv = CONVERTERS["hf-vjepa2"](ref.state_dict(), cfg.to_dict())
    assert conv.init_args["pos_embed"] == "rope3d" and any(k.startswith("predictor.") for k in conv.dropped)
    x = torch.randn(2, 3, frames, 32, 32)
    with torch.no_grad():
        tokens = ref(x.transpose(1, 2), skip_predictor=True).last_hidden_state
    err = check(ref, conv, x, tokens, tokens.mean(1))
    print(f"hf-vjepa2 {frames}f max abs diff {err:.2e}")


@pytest.mark.parametrize("frames", [8, 16])
def test_vivit_joint_table_and_cls(frames):
    cfg = transformers.VivitConfig(image_size=32, num_frames=frames, tubelet_size=[2, 8, 8], **SMALL)
    torch.manual_seed(frames)
    ref = transformers.VivitModel(cfg).eval()
    perturb(ref)
    with torch.no_grad():
        ref.embeddings.cls_token.normal_()
        ref.embeddings.position_embeddings.normal_()
    conv = CONVERTERS["hf-vivit"](ref.state_dict(), cfg.to_dict())
    assert "pooler.dense.weight" in conv.dropped
    x = torch.randn(2, 3, frames, 32, 32)
    with torch.no_grad():
        tokens = ref(x.transpose(1, 2)).last_hidden_state
    err = check(ref, conv, x, tokens, tokens[:, 0])
    print(f"hf-vivit {frames}f max abs diff {err:.2e}")


def test_unused_and_unset_weights_fail_with_the_lists():
    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=8, num_frames=8, **SMALL)
    sd = transformers.VideoMAEModel(cfg).state_dict()
    sd["encoder.layer.0.attention.attention.extra.weight"] = torch.zeros(2)
    with pytest.raises(VideosslError, match=r"1 reference weight\(s\) unused: \['encoder.layer.0.attention.attention.extra"):
        CONVERTERS["hf-videomae"](sd, cfg.to_dict())
    del sd["encoder.layer.0.attention.attention.extra.weight"]
    del sd["encoder.layer.1.output.dense.bias"]
    with pytest.raises(VideosslError, match="encoder.layer.1.output.dense.bias"):
        CONVERTERS["hf-videomae"](sd, cfg.to_dict())


def test_videomae_old_q_bias_v_bias_layout():
    """Hub checkpoints written by older transformers hold q_bias / v_bias instead of query.bias / value.bias."""
    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=8, num_frames=8, **SMALL)
    torch.manual_seed(0)
    ref = transformers.VideoMAEModel(cfg).eval()
    perturb(ref)
    sd = {k.replace("attention.query.bias", "attention.q_bias").replace("attention.value.bias", "attention.v_bias"): v
          for k, v in ref.state_dict().items()}
    assert any(k.endswith("q_bias") for k in sd)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        check(ref, CONVERTERS["hf-videomae"](sd, cfg.to_dict()), x, ref(x.transpose(1, 2)).last_hidden_state)
