"""Small TAPNext (arXiv:2504.05579): causal in time, streaming = whole clip, isolated queries, loss and read-out."""

import pytest
import torch
import torch.nn.functional as F

from videossl.errors import VideosslError
from videossl.models.tapnext import BlockDiagonal, TAPNext, TemporalBlock, readout, tapnext_loss


def _model(**kw):
    torch.manual_seed(0)
    return TAPNext(img_size=32, patch=8, width=64, depth=2, heads=2, **kw).eval()


def _inputs(T=6):
    torch.manual_seed(1)
    video = torch.rand(2, 3, T, 32, 32)
    queries = torch.tensor([[[0.0, 5.0, 7.0], [2.0, 10.0, 20.0]], [[1.0, 3.0, 3.0], [0.0, 30.0, 1.0]]])  # (t, y, x)
    return video, queries


@pytest.mark.parametrize("iso", [False, True])
def test_outputs_up_to_t_ignore_later_frames(iso):
    m = _model(isolate_queries=iso)
    v, q = _inputs()
    v2 = v.clone()
    v2[:, :, 4:] = torch.rand_like(v2[:, :, 4:])
    with torch.no_grad():
        a, b = m(v, q), m(v2, q)
    assert torch.equal(a.tracks[:, :4], b.tracks[:, :4]) and torch.equal(a.visible_logit[:, :4], b.visible_logit[:, :4])
    assert not torch.allclose(a.visible_logit[:, 4:], b.visible_logit[:, 4:])  # later frames do matter


@pytest.mark.parametrize("iso", [False, True])
def test_frame_by_frame_equals_whole_clip(iso):
    m = _model(isolate_queries=iso)
    v, q = _inputs()
    with torch.no_grad():
        whole = m(v, q)
        state = m.init_state(q)
        steps = []
        for t in range(v.shape[2]):
            out, state = m.step(v[:, :, t], state)
            steps.append(out)
    assert state["t"] == v.shape[2]
    for name in ("tracks", "visible_logit", "certainty", "logits_x"):
        streamed = torch.cat([getattr(o, name) for o in steps], 1)
        assert torch.allclose(streamed, getattr(whole, name), atol=1e-4), name


def test_isolated_queries_do_not_see_each_other():
    v, q = _inputs()
    more = torch.cat([q, torch.tensor([[[0.0, 15.0, 15.0]], [[3.0, 8.0, 9.0]]])], 1)
    iso, mixed = _model(isolate_queries=True), _model(isolate_queries=False)
    with torch.no_grad():
        a, b = iso(v, q), iso(v, more)
        c, d = mixed(v, q), mixed(v, more)
    assert torch.allclose(a.logits_x, b.logits_x[:, :, :2], atol=1e-5)
    assert torch.allclose(a.visible_logit, b.visible_logit[:, :, :2], atol=1e-5)
    assert not torch.allclose(c.logits_x, d.logits_x[:, :, :2], atol=1e-4)  # without the mask they interact


def test_query_token_changes_on_the_query_frame_only():
    m = _model()
    q = torch.tensor([[[2.0, 4.0, 6.0]]])
    tok = m._query_tokens(q, torch.arange(5))[0, :, 0]  # (T, D)
    assert torch.equal(tok[0], m.unknown_token) and torch.equal(tok[1], m.unknown_token)
    assert torch.equal(tok[3], m.mask_token) and torch.equal(tok[4], m.mask_token)
    assert not torch.allclose(tok[2], m.query_token)


def test_readout_window_and_expectation():
    logits = torch.full((1, 64), -50.0)
    logits[0, 10], logits[0, 11] = 10.0, 10.0
    logits[0, 50] = 9.9  # outside +-20 bins of the argmax: ignored
    x, p = readout(logits)
    assert x.item() == pytest.approx(10.5, abs=1e-4) and p[0, 50] == 0


def test_loss_uses_visible_points_for_coordinates():
    m = _model()
    v, q = _inputs()
    out = m(v, q)
    target = torch.full(out.tracks.shape, 5.0)
    vis = torch.zeros(out.visible_logit.shape, dtype=torch.bool)
    terms = tapnext_loss(out, target, vis)
    assert terms["huber"].item() == 0.0 and terms["ce"].item() == 0.0 and terms["visibility"].item() > 0
    vis[:] = True
    terms = tapnext_loss(out, target, vis)
    terms["loss"].backward()
    assert m.coord_head[-1].weight.grad.abs().sum() > 0


def test_wrong_frame_size_is_one_line():
    with pytest.raises(VideosslError, match="built for 32x32"):
        _model()(torch.rand(1, 3, 2, 64, 64), torch.zeros(1, 1, 3))


def test_block_diagonal_is_one_map_per_head():
    torch.manual_seed(0)
    bd = BlockDiagonal(12, 3)
    x = torch.randn(5, 7, 12)
    ref = (torch.einsum("...hi,hij->...hj", x.unflatten(-1, (3, 4)), bd.weight) + bd.bias).flatten(-2)
    assert torch.allclose(bd(x), ref, atol=1e-6)
    x2 = x.clone()
    x2[..., :4] += 1.0  # the first head's inputs feed the first head's outputs only
    assert torch.equal(bd(x2)[..., 4:], bd(x)[..., 4:]) and not torch.allclose(bd(x2)[..., :4], bd(x)[..., :4])


def _temporal_reference(tb: TemporalBlock, seq: torch.Tensor) -> torch.Tensor:
    """The temporal block written per token sequence (N, T, D): nn.Conv1d channels-first with causal zero padding,
    then the RG-LRU step by step (h_0 = x_0 unscaled, h_t = a_t h_{t-1} + sqrt(1 - a_t^2) x_t)."""
    z = tb.norm1(seq)
    y, u = F.gelu(tb.lin_y(z)), tb.lin_x(z)
    c = tb.conv(F.pad(u.transpose(1, 2), (tb.conv_width - 1, 0))).transpose(1, 2)
    lru = tb.lru
    gate = lambda g, v: (torch.einsum("...hi,hij->...hj", v.unflatten(-1, (g.heads, g.d)), g.weight) + g.bias).flatten(-2)  # noqa: E731
    a = torch.exp(-lru.c * torch.sigmoid(gate(lru.gate_a, c)) * F.softplus(lru.log_lambda))
    x = torch.sigmoid(gate(lru.gate_x, c)) * c
    hs, h = [], None
    for t in range(seq.shape[1]):
        h = x[:, t] if h is None else a[:, t] * h + torch.sqrt(1 - a[:, t] ** 2) * x[:, t]
        hs.append(h)
    out = seq + tb.lin_out(y * torch.stack(hs, 1))
    z = tb.norm2(out)
    return out + tb.mlp_out(F.gelu(tb.mlp_gate(z)) * tb.mlp_in(z))


def test_temporal_block_on_frame_layout_equals_per_token_sequences():
    """The block runs on (B, T, L, D) (time on dim 1, no transpose): the same as each of the B*L token sequences
    through the channels-first conv and the step-by-step RG-LRU; streamed in two chunks with its state, too."""
    torch.manual_seed(0)
    tb = TemporalBlock(16, 2)
    x = torch.randn(2, 7, 5, 16)  # (B, T, L, D)
    with torch.no_grad():
        out, state = tb(x, None)
        ref = _temporal_reference(tb, x.permute(0, 2, 1, 3).reshape(10, 7, 16)).view(2, 5, 7, 16).permute(0, 2, 1, 3)
        first, st = tb(x[:, :3], None)
        rest, _ = tb(x[:, 3:], st)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(torch.cat([first, rest], 1), out, atol=1e-5)
    assert state["conv"].shape == (2, 3, 5, 16) and state["lru"].shape == (2, 5, 16)


def test_relative_bins_are_offsets_from_the_query_point():
    m = _model(relative=True, max_offset=10)
    assert m.num_bins == 21 and m.coord_head[-1].out_features == 42
    v, q = _inputs()
    with torch.no_grad():
        # a head that puts all mass on the centre bin (offset 0) tracks the query point on every frame
        m.coord_head[-1].weight.zero_()
        m.coord_head[-1].bias.fill_(-30.0)
        m.coord_head[-1].bias[[10, 21 + 10]] = 30.0
        out = m(v, q)
    expect = q[:, None, :, [2, 1]].expand_as(out.tracks)
    assert torch.allclose(out.tracks, expect, atol=1e-4)
    assert torch.equal(out.bin_origin, q[:, None, :, [2, 1]] - 10)
    # the loss's bin targets are offsets: a target 3 px right and 2 px up of the query is bins (13, 8)
    target = expect + torch.tensor([3.0, -2.0])
    vis = torch.ones(target.shape[:3], dtype=torch.bool)
    ce = tapnext_loss(out, target, vis)["ce"]
    lx, ly = out.logits_x.flatten(0, 2), out.logits_y.flatten(0, 2)
    ref = (F.cross_entropy(lx, torch.full((lx.shape[0],), 13)) + F.cross_entropy(ly, torch.full((ly.shape[0],), 8)))
    assert ce.item() == pytest.approx(ref.item(), rel=1e-5)


def test_relative_head_is_causal_and_streams_like_the_whole_clip():
    m = _model(relative=True, isolate_queries=True)
    v, q = _inputs()
    with torch.no_grad():
        whole = m(v, q)
        state, steps = m.init_state(q), []
        for t in range(v.shape[2]):
            out, state = m.step(v[:, :, t], state)
            steps.append(out.tracks)
    assert torch.allclose(torch.cat(steps, 1), whole.tracks, atol=1e-4)


def test_max_offset_needs_the_relative_head():
    with pytest.raises(VideosslError, match="relative: true"):
        TAPNext(img_size=32, patch=8, width=64, depth=1, heads=2, max_offset=8)
    with pytest.raises(VideosslError, match="max_offset must be"):
        TAPNext(img_size=32, patch=8, width=64, depth=1, heads=2, relative=True, max_offset=0)
