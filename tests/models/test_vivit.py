"""ViViT: token dropping, position tables, errors, freezing (tiny CPU models)."""

import pytest
import torch

from videossl.errors import VideosslError
from videossl.models.vivit import (
    ViViT,
    inflate_patch_weight,
    num_kept,
    random_keep_indices,
    resize_temporal_table,
    tube_keep_indices,
    vivit,
)


def tiny(**kw):
    args = dict(size="tiny", embed_dim=32, depth=2, num_heads=2, img_size=32, num_frames=8, tubelet=(2, 8, 8))
    args.update(kw)
    return ViViT(**args)


def clip(b=2, t=8, s=32):
    return torch.randn(b, 3, t, s, s)


def seen_lengths(model):
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    return seen


def test_token_counts_match_spec_table():
    # 224 px, 2x16x16 tubelets: 196 tokens per 2-frame step (spec §7)
    for frames, n in ((16, 1568), (128, 12544), (256, 25088)):
        assert frames // 2 * 196 == n
        assert num_kept(n, 0.75) == round(0.25 * n)
        assert num_kept(n, 0.5) == n // 2


@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9])
def test_transformer_sees_exactly_the_kept_tokens(ratio):
    m = tiny(mask_ratio=ratio).train()
    seen = seen_lengths(m)
    y, kept = m(clip(3), return_kept=True)
    n = 4 * 4 * 4
    assert y.shape == (3, 32)
    assert seen[-1] == (3, round((1 - ratio) * n), 32)
    assert kept.num_tokens == round((1 - ratio) * n)
    keep = kept.indices
    assert keep.shape == (3, round((1 - ratio) * n))
    assert len({tuple(r) for r in keep.tolist()}) == 3  # per-sample masks differ
    assert all(len(set(r)) == len(r) for r in keep.tolist())  # no token twice


def test_eval_is_unmasked_and_mask0_equals_plain_path():
    m = tiny(mask_ratio=0.75)
    seen = seen_lengths(m)
    x = clip(2)
    m.eval()
    y, kept = m(x, return_kept=True)
    assert seen[-1][1] == 64 and kept.indices is None
    m.train()
    y0 = m(x, mask_ratio=0.0)
    assert seen[-1][1] == 64
    torch.testing.assert_close(y, y0)  # no dropout/droppath: same function


def test_kept_tokens_carry_their_own_positions():
    m = tiny(mask_ratio=0.5).train()
    x = clip(2)
    g = torch.Generator().manual_seed(0)
    toks, kept = m(x, generator=g, return_tokens=True, return_kept=True)
    keep = kept.indices
    # reproduce by hand: embed all tokens, gather the kept ones, run the blocks
    full = m.embed(x)
    manual = full.gather(1, keep[:, :, None].expand(-1, -1, 32))
    for blk in m.blocks:
        manual = blk(manual)
    torch.testing.assert_close(toks, m.norm(manual))


def test_random_and_tube_keep_indices():
    k = random_keep_indices(4, 20, 0.75, generator=torch.Generator().manual_seed(1))
    assert k.shape == (4, 5) and bool((k.diff(dim=1) > 0).all())
    valid = torch.ones(4, 20, dtype=torch.bool)
    valid[:, 10:] = False
    k = random_keep_indices(4, 20, 0.5, token_valid=valid)
    assert bool((k < 10).all())  # padding tokens go first
    t = tube_keep_indices(2, 3, 16, 0.75)
    assert t.shape == (2, 12)
    cells = (t % 16).view(2, 3, 4)
    assert bool((cells == cells[:, :1]).all())  # same cells at every time step


def test_position_table_interpolates_16_to_128_frames(tmp_path):
    m16 = tiny(num_frames=16)
    torch.testing.assert_close(m16.temporal_table(8), m16.pos_temporal)  # unchanged at its own length
    assert resize_temporal_table(m16.pos_temporal, 8) is m16.pos_temporal
    path = tmp_path / "encoder.pt"
    torch.save({f"encoder.{k}": v for k, v in m16.state_dict().items()}, path)
    # same architecture (the run's config), longer clip: interpolated at run time
    again = tiny(num_frames=16)
    again.load_pretrained(str(path))
    y, kept = again.eval()(clip(1, t=128), return_kept=True)
    assert y.shape == (1, 32)
    assert kept.num_tokens == 64 * 16
    # a model built for 128 frames loads the 16-frame table (resized on load)
    m128 = tiny(num_frames=128)
    m128.load_pretrained(str(path))
    assert m128.pos_temporal.shape[1] == 64
    torch.testing.assert_close(m128.blocks[0].attn.qkv.weight, m16.blocks[0].attn.qkv.weight)
    assert m128.eval()(clip(1, t=128)).shape == (1, 32)


def test_errors_are_clear():
    m = tiny(interpolate_pos=False)
    with pytest.raises(VideosslError, match="longer than the temporal position table"):
        m(clip(1, t=16))
    with pytest.raises(VideosslError, match="not divisible by the patch"):
        m(clip(1, s=36))
    with pytest.raises(VideosslError, match="tubelet length"):
        m(clip(1, t=7))
    with pytest.raises(VideosslError):
        tiny(mask_ratio=1.0)
    with pytest.raises(VideosslError, match="unknown model"):
        vivit("vivit-xxl")


def test_valid_mask_pools_only_real_frames():
    m = tiny().eval()
    x = clip(1)
    valid = torch.tensor([[True] * 4 + [False] * 4])
    y = m(x, valid=valid)
    # padding tubelets are hidden from attention and pooling: changing them changes nothing
    x2 = x.clone()
    x2[:, :, 4:] = torch.randn_like(x2[:, :, 4:])
    torch.testing.assert_close(m(x2, valid=valid), y)


def test_train_only_last_k_blocks_and_checkpointing():
    m = tiny(depth=3, trainable_blocks=1, grad_checkpointing=True, mask_ratio=0.5).train()
    m(clip(2)).sum().backward()
    got = {n for n, p in m.named_parameters() if p.grad is not None}
    assert got and all(n.startswith(("blocks.2.", "norm.")) for n in got)
    assert not m.patch_embed.weight.requires_grad


def test_inflation_matches_2d_patches_on_a_static_clip():
    m = tiny()
    w2 = torch.randn(32, 3, 8, 8)
    b2 = torch.randn(32)
    m.inflate_from_2d(w2, b2)
    frame = torch.randn(1, 3, 32, 32)
    static = frame[:, :, None].repeat(1, 1, 8, 1, 1)
    e3 = m.patch_embed(static)[:, :, 0]  # first time step
    e2 = torch.nn.functional.conv2d(frame, w2, b2, stride=8)
    torch.testing.assert_close(e3, e2, atol=1e-5, rtol=1e-5)
    assert inflate_patch_weight(w2, 2).shape == (32, 3, 2, 8, 8)


def test_tube_mode_keeps_same_cells_per_step():
    m = tiny(mask_ratio=0.75, mask_mode="tube").train()
    _, kept = m(clip(2), return_kept=True)
    assert kept.num_tokens == 4 * 4  # 4 of 16 cells x 4 steps


def test_motion_input_embeds_the_scaled_temporal_difference():
    torch.manual_seed(0)
    m = ViViT(size="tiny", embed_dim=32, depth=1, num_heads=2, img_size=16, num_frames=4, tubelet=(2, 8, 8),
              motion_input=True, motion_gain=4.0)
    assert m.patch_embed.in_channels == 6
    x = torch.rand(2, 3, 4, 16, 16)
    with torch.no_grad():  # the embedding of x equals a 6-channel conv on [x, 4·(x_t − x_{t−1})]
        diff = x - torch.cat([x[:, :, :1], x[:, :, :-1]], 2)
        want = m.patch_embed(torch.cat([x, 4.0 * diff], 1))
        static = torch.cat([x, torch.zeros_like(x)], 1)
        assert not torch.allclose(m.patch_embed(static), want)
        got = m.embed(x) - (m.temporal_table(2)[:, :, None, :] + m.spatial_table((2, 2))[:, None, :, :]).flatten(1, 2)
        assert torch.allclose(got, want.flatten(3).permute(0, 2, 3, 1).flatten(1, 2), atol=1e-5)
    assert m.eval()(x).shape == (2, 32)
    with pytest.raises(VideosslError, match="built for 3 channels"):
        m(torch.rand(1, 6, 4, 16, 16))


def test_mirror_keep_indices_by_hand():
    from videossl.models.vivit import mirror_keep_indices

    # grid T'=3 steps x S=2 cells: token t*2+s; (t=0,s=1)->(2,1)=5, (t=1,s=0)->(1,0)=2
    assert mirror_keep_indices(torch.tensor([[1, 2]]), 3, 2).tolist() == [[2, 5]]
    assert mirror_keep_indices(torch.tensor([[0, 5], [3, 4]]), 3, 2).tolist() == [[1, 4], [0, 3]]
    with pytest.raises(VideosslError, match="beyond"):
        mirror_keep_indices(torch.tensor([[6]]), 3, 2)


def test_explicit_keep_masks_a_reversed_clip_alike():
    """Given the mirrored keep indices, the reversed clip keeps exactly the tubelets the clip kept."""
    torch.manual_seed(0)
    from videossl.models.vivit import mirror_keep_indices

    m = ViViT(size="tiny", embed_dim=16, depth=1, num_heads=2, img_size=16, num_frames=6, tubelet=(1, 8, 8), mask_ratio=0.5)
    m.train()
    seen = []
    m.patch_embed.register_forward_hook(lambda mod, a, out: seen.append(out.flatten(3).permute(0, 2, 3, 1).flatten(1, 2)))
    x = torch.rand(2, 3, 6, 16, 16)
    _, kept = m(x, return_kept=True)
    keep = kept.indices
    assert keep.shape == (2, 12) and kept.grid == (6, 2, 2)
    _, kept_rev = m(x.flip(2), keep=mirror_keep_indices(keep, 6, 4), return_kept=True)
    fwd = seen[0].gather(1, keep[:, :, None].expand(-1, -1, 16))
    rev = seen[1].gather(1, kept_rev.indices[:, :, None].expand(-1, -1, 16))
    for b in range(2):  # the same patches (as a set: their order in the sequence differs)
        a, r = fwd[b], rev[b]
        assert torch.allclose(a[a[:, 0].argsort()], r[r[:, 0].argsort()], atol=1e-6)
    with pytest.raises(VideosslError, match="keep must be"):
        m(x, keep=torch.tensor([[0, 24]]).expand(2, -1))
    m.eval()  # evaluation never masks, keep or not
    y, kept = m(x, keep=keep, return_kept=True)
    assert y.shape == (2, 16) and kept.num_tokens == 24


def test_images_go_through_their_own_2d_patch_conv():
    torch.manual_seed(0)
    m = tiny(image_input=True, motion_input=True, mask_ratio=0.5)
    img = torch.rand(2, 3, 32, 32)
    m.eval()
    (a, kept), b = m(img, return_kept=True), m(img[:, :, None])
    assert a.shape == (2, 32) and torch.allclose(a, b) and kept.num_tokens == 16  # 4x4 patches, no time
    seen = []
    m.patch_embed.register_forward_hook(lambda mod, i, o: seen.append("3d"))
    m.image_embed.register_forward_hook(lambda mod, i, o: seen.append("2d"))
    m.train()
    m(img)
    _, kept = m(clip(), return_kept=True)
    assert seen == ["2d", "3d"] and kept.num_tokens == 32  # half of 4 x 16 video tokens
    with pytest.raises(VideosslError, match="image_input=True"):
        tiny()(torch.rand(2, 3, 1, 32, 32))


@pytest.mark.parametrize("opts", [dict(pos_embed="rope3d"), dict(cls_token=True, pool="cls", ln_pre=True),
                                  dict(cls_token=True, pos_embed="joint", final_norm="pooled", proj_dim=16),
                                  dict(pos_embed="sincos", act="quick_gelu", qkv_bias=False)])
def test_token_dropping_with_layout_options(opts):
    """Kept tokens keep their own positions (RoPE coordinates follow the kept indices); a class token is never dropped."""
    m = tiny(mask_ratio=0.5, **opts).train()
    with torch.no_grad():  # peaky attention, so that positions visibly matter
        for blk in m.blocks:
            blk.attn.qkv.weight.mul_(10)
    seen = seen_lengths(m)
    x = clip(2)
    g = torch.Generator().manual_seed(0)
    toks, kept = m(x, generator=g, return_tokens=True, return_kept=True)
    cls = int(m.has_cls)
    assert kept.num_tokens == seen[-1][1] == 32 + cls
    full = m.embed(x)
    manual = full.gather(1, kept.indices[:, :, None].expand(-1, -1, 32))
    if cls:
        c = m.cls_token + getattr(m, "pos_cls", 0)
        manual = torch.cat([c.expand(2, -1, -1), manual], 1)
    if m.ln_pre is not None:
        manual = m.ln_pre(manual)
    coords = m.token_coords(kept.indices, kept.grid) if m.pos_embed == "rope3d" else None
    for blk in m.blocks:
        manual = blk(manual, None, coords)
    if m.final_norm == "tokens":
        manual = m.norm(manual)
    torch.testing.assert_close(toks, manual)
    if m.pos_embed == "rope3d":  # the positions matter: other coordinates give other tokens
        wrong = m.token_coords(torch.arange(32).expand(2, -1), kept.grid)
        other = m.embed(x).gather(1, kept.indices[:, :, None].expand(-1, -1, 32))
        for blk in m.blocks:
            other = blk(other, None, wrong)
        assert (m.norm(other) - toks).abs().max() > 1e-3
    m.eval()
    assert m(x).shape == (2, m.feature_dim)


def test_layout_option_errors():
    with pytest.raises(VideosslError, match="pool='cls' needs cls_token"):
        tiny(pool="cls")
    with pytest.raises(VideosslError, match="unknown pos_embed"):
        tiny(pos_embed="alibi")
    with pytest.raises(VideosslError, match="rope3d"):
        tiny(pos_embed="rope3d", cls_token=True)
