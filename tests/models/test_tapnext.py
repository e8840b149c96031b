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


def _whole_and_streamed(m, v, q, field):
    """The whole-clip output and the same ``field`` stepped frame by frame, stacked along time."""
    with torch.no_grad():
        whole = m(v, q)
        state, steps = m.init_state(q), []
        for t in range(v.shape[2]):
            out, state = m.step(v[:, :, t], state)
            steps.append(getattr(out, field))
    return whole, torch.cat(steps, 1)


def test_relative_head_is_causal_and_streams_like_the_whole_clip():
    m = _model(relative=True, isolate_queries=True)
    v, q = _inputs()
    whole, streamed = _whole_and_streamed(m, v, q, "tracks")
    assert torch.allclose(streamed, whole.tracks, atol=1e-4)


def test_max_offset_needs_the_relative_head():
    with pytest.raises(VideosslError, match="relative: true"):
        TAPNext(img_size=32, patch=8, width=64, depth=1, heads=2, max_offset=8)
    with pytest.raises(VideosslError, match="max_offset must be"):
        TAPNext(img_size=32, patch=8, width=64, depth=1, heads=2, relative=True, max_offset=0)


def test_motion_input_streams_like_the_whole_clip_and_stays_causal():
    m = _model(relative=True, isolate_queries=True, motion_input=True)
    v, q = _inputs()
    v2 = v.clone()
    v2[:, :, 4:] = torch.rand_like(v2[:, :, 4:])
    whole, streamed = _whole_and_streamed(m, v, q, "logits_x")
    with torch.no_grad():
        changed = m(v2, q)
    assert torch.allclose(streamed, whole.logits_x, atol=1e-4)
    assert torch.equal(whole.logits_x[:, :4], changed.logits_x[:, :4])


def test_motion_input_is_the_frame_and_its_difference_to_the_previous_frame():
    m = _model(motion_input=True)
    assert m.patch_embed.in_channels == 6
    v, _ = _inputs(T=3)
    frames = v.transpose(1, 2)
    x = m._embed_input(frames, None)
    assert torch.equal(x[:, :, :3], frames)
    assert torch.equal(x[:, 0, 3:], torch.zeros_like(frames[:, 0]))  # frame 0: no previous frame, zero difference
    assert torch.allclose(x[:, 2, 3:], frames[:, 2] - frames[:, 1])
    # a still video gives zero difference channels; a moving one does not, and the output changes with it
    still = v[:, :, :1].expand_as(v).contiguous()
    q = torch.tensor([[[0.0, 5.0, 7.0]], [[0.0, 3.0, 3.0]]])
    with torch.no_grad():
        base = TAPNext(img_size=32, patch=8, width=64, depth=2, heads=2, motion_input=True).eval()
        base.patch_embed.weight[:, 3:].zero_()  # blind to the difference channels
        a = base(v, q).logits_x
        base.patch_embed.weight[:, 3:].normal_()
        b = base(v, q).logits_x
        c1 = base(still, q).logits_x
        base.patch_embed.weight[:, 3:].zero_()
        c0 = base(still, q).logits_x
    assert not torch.allclose(a, b)
    assert torch.allclose(c0, c1, atol=1e-6)


def test_integrated_head_sums_displacements_after_the_query_frame_and_streams():
    m = _model(relative=True, max_offset=4, integrate=True, isolate_queries=True, motion_input=True)
    v, q = _inputs()
    whole, streamed = _whole_and_streamed(m, v, q, "tracks")
    assert torch.allclose(streamed, whole.tracks, atol=1e-4)
    tq = q[..., 0].long()  # (B, Q)
    xy = q[..., [2, 1]]
    for b in range(2):
        for i in range(2):
            t0 = int(tq[b, i])
            # up to and including the query frame the track is the query point; then the running sum of increments
            assert torch.allclose(whole.tracks[b, : t0 + 1, i], xy[b, i].expand(t0 + 1, 2), atol=1e-5)
            ref = xy[b, i] + whole.increments[b, t0 + 1:, i].cumsum(0)
            assert torch.allclose(whole.tracks[b, t0 + 1:, i], ref, atol=1e-4)
    assert whole.increments.abs().max() <= 4 + 1e-5


def test_integrated_head_is_trained_on_displacements():
    m = _model(relative=True, max_offset=4, integrate=True)
    v, q = _inputs(T=3)
    with torch.no_grad():
        out = m(v, q)
    target = torch.zeros(2, 3, 2, 2)
    target[:, 1] = torch.tensor([2.0, -1.0])  # moves +2, -1 then back
    vis = torch.ones(2, 3, 2, dtype=torch.bool)
    vis[:, 0] = False  # frame 0 hidden: frame 1 has no displacement target
    ce = tapnext_loss(out, target, vis)["ce"]
    # only frame 2 is scored: displacement (-2, +1) -> bins 2 and 5 of 9
    lx, ly = out.logits_x[:, 2].flatten(0, 1), out.logits_y[:, 2].flatten(0, 1)
    ref = F.cross_entropy(lx, torch.full((lx.shape[0],), 2)) + F.cross_entropy(ly, torch.full((ly.shape[0],), 5))
    assert ce.item() == pytest.approx(ref.item(), rel=1e-5)
    with pytest.raises(VideosslError, match="relative: true"):
        TAPNext(img_size=32, patch=8, width=64, depth=1, heads=2, integrate=True)


def test_soft_bin_targets_split_between_the_two_nearest_bins():
    from videossl.models.tapnext import _bin_ce
    logits = torch.randn(5, 9)
    pos = torch.tensor([0.0, 2.25, 3.5, 8.0, 7.9])
    got = _bin_ce(logits, pos, 9, soft=True)
    logp = logits.log_softmax(-1)
    ref = torch.stack([-logp[0, 0], -(0.75 * logp[1, 2] + 0.25 * logp[1, 3]), -(0.5 * logp[2, 3] + 0.5 * logp[2, 4]),
                       -logp[3, 8], -(0.1 * logp[4, 7] + 0.9 * logp[4, 8])])
    assert torch.allclose(got, ref, atol=1e-5)
    hard = _bin_ce(logits, pos, 9, soft=False)
    assert torch.allclose(hard, F.cross_entropy(logits, pos.round().long(), reduction="none"))
    # the minimiser of the soft loss puts the expectation at the target (the hard one at the nearest bin)
    z = torch.zeros(1, 9, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.1)
    for _ in range(500):
        opt.zero_grad()
        _bin_ce(z, torch.tensor([2.3]), 9, soft=True).sum().backward()
        opt.step()
    assert (z.softmax(-1) * torch.arange(9.0)).sum().item() == pytest.approx(2.3, abs=0.02)


def _corr_model(**kw):
    return _model(relative=True, max_offset=4, integrate=True, isolate_queries=True, corr_radius=3, **kw)


def test_correlation_tracker_streams_like_the_whole_clip_and_stays_causal():
    m = _corr_model(motion_input=True)
    v, q = _inputs()
    whole, streamed = _whole_and_streamed(m, v, q, "tracks")
    assert torch.allclose(streamed, whole.tracks, atol=1e-4)
    v2 = v.clone()
    v2[:, :, 4:] = torch.rand_like(v2[:, :, 4:])
    with torch.no_grad():
        b = m(v2, q)
    assert torch.equal(whole.tracks[:, :4], b.tracks[:, :4]) and not torch.allclose(whole.tracks[:, 4:], b.tracks[:, 4:])
    # isolated queries: another query leaves these ones' outputs as they are (its template and window are its own)
    more = torch.cat([q, torch.tensor([[[0.0, 15.0, 15.0]], [[3.0, 8.0, 9.0]]])], 1)
    with torch.no_grad():
        c = m(v, more)
    assert torch.allclose(c.tracks[:, :, :2], whole.tracks, atol=1e-5)


def test_local_correlation_peaks_at_the_displacement():
    m = _corr_model()
    with torch.no_grad():
        m.corr_feat.weight.zero_()
        m.corr_feat.bias.zero_()
        for c in range(3):
            m.corr_feat.weight[c, c, 1, 1] = 1.0  # features = the RGB pixels
    f0, f1 = torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    f0[0, :, 12, 10] = 1.0  # a bright pixel at (x 10, y 12) moves by (+2, -1)
    f1[0, :, 11, 12] = 1.0
    q = torch.tensor([[[0.0, 12.0, 10.0]]])
    state = {}
    with torch.no_grad():
        tok0 = m._corr_tokens(f0, q, 0, state)  # the query frame: template taken, no correlation token yet
        assert torch.equal(tok0, torch.zeros_like(tok0))
        centre = torch.tensor([[[10.0, 12.0]]])  # the track on the query frame: the query point
        corr = m.local_correlation(m.corr_feat(f1), state["template"], centre)
    k = int(corr[0, 0].argmax())
    assert m.corr_offsets[k].tolist() == [2.0, -1.0] and corr[0, 0, k] > 0 and corr[0, 0].sum() == corr[0, 0, k]
    # sub-pixel: half a pixel off the grid, the two neighbouring offsets share the peak
    with torch.no_grad():
        corr = m.local_correlation(m.corr_feat(f1), state["template"], centre + torch.tensor([0.5, 0.0]))
    top2 = corr[0, 0].topk(2).indices
    assert sorted(m.corr_offsets[top2][:, 0].tolist()) == [1.0, 2.0]


def test_correlation_input_needs_the_integrating_head():
    with pytest.raises(VideosslError, match="integrate: true"):
        TAPNext(img_size=32, patch=8, width=64, depth=1, heads=2, relative=True, corr_radius=2)


def test_correlation_window_follows_the_previous_track_and_keeps_the_query_template():
    m = _corr_model()
    v, q = _inputs()
    tokens, orig = [], m._corr_tokens

    def spy(frame, queries, t, state):
        tok = orig(frame, queries, t, state)
        tokens.append(tok)
        return tok
    m._corr_tokens = spy
    with torch.no_grad():
        out = m(v, q)
        for b in range(q.shape[0]):
            for i in range(q.shape[1]):
                tq, qxy = int(q[b, i, 0]), q[b : b + 1, i : i + 1, [2, 1]]
                template = m._sample(m.corr_feat(v[b : b + 1, :, tq]), qxy)  # the query frame's, kept
                for t in range(v.shape[2]):
                    got = tokens[t][b, 0, i]
                    if t <= tq:
                        assert torch.equal(got, torch.zeros_like(got))
                        continue
                    centre = out.tracks[b : b + 1, t - 1, i : i + 1]  # where the track was on the previous frame
                    corr = m.local_correlation(m.corr_feat(v[b : b + 1, :, t]), template, centre)
                    torch.testing.assert_close(got, m.corr_proj(corr)[0, 0], atol=1e-5, rtol=0)
    assert (out.tracks[:, 1:] != out.tracks[:, :-1]).any()  # the centres do move: the check is not of a static track
